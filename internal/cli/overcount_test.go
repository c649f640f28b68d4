package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"banger/internal/progress"
	"banger/internal/rpc"
)

// TestCountPastItsTotal: a count that passed its total (a server sending
// more than its Content-Length, a tool doing more than it listed) makes
// the total wrong; no renderer shows "70/65" or a percentage over 100, and
// a negative count shows as none.
func TestCountPastItsTotal(t *testing.T) {
	op := rpc.Operation{ID: "op-1", Kind: "image pull", Target: "x", State: rpc.StateRunning, Phase: "unpacking", Done: 70, Total: 65, Unit: progress.Items}
	if got := progressText(op); strings.Contains(got, "%") || strings.Contains(got, "/65") {
		t.Errorf("progressText = %q", got)
	}
	var out bytes.Buffer
	r := &lineRenderer{w: &out, now: time.Now}
	r.update(op)
	fin := op
	fin.State = rpc.StateSucceeded
	r.finish(fin)
	if s := out.String(); strings.Contains(s, "70/65") || !strings.Contains(s, "70 items") {
		t.Errorf("line renderer:\n%s", s)
	}
	neg := op
	neg.Done, neg.Total = -5, -1
	if got := progressText(neg); got != "-" {
		t.Errorf("progressText of a negative count = %q, want -", got)
	}
}
