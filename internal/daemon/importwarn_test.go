package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"banger/internal/store"
)

type phases struct{ got []string }

func (p *phases) Phase(s string)             { p.got = append(p.got, s) }
func (p *phases) SetTotal(int64, store.Unit) {}
func (p *phases) Add(int64)                  {}

// TestImportWarningsReachTheUser: what an import could not reproduce (an
// xattr left out) is shown as phases of its operation, bounded, and every
// warning is logged; before, the warnings were dropped.
func TestImportWarningsReachTheUser(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	var p phases
	var ws []string
	for i := 0; i < 8; i++ {
		ws = append(ws, fmt.Sprintf("xattr %d of /bin/x left out", i))
	}
	reportWarnings(log, &p, "reg.example/app:1", ws)
	if len(p.got) != maxWarningPhases+1 || p.got[0] != "warning: xattr 0 of /bin/x left out" || !strings.Contains(p.got[maxWarningPhases], "3 more warnings") {
		t.Errorf("phases = %q", p.got)
	}
	if n := strings.Count(logged.String(), "left out"); n != len(ws) {
		t.Errorf("%d of %d warnings logged:\n%s", n, len(ws), logged.String())
	}
}
