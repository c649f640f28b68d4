package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckSnapshotsCountsThemAndTheirDisk: none, then two snapshot
// directories whose files take disk; the message gives both.
func TestCheckSnapshotsCountsThemAndTheirDisk(t *testing.T) {
	state := t.TempDir()
	if r := checkSnapshots(state); r.Status != OK || !strings.Contains(r.Detail, "no snapshots") {
		t.Fatalf("no snapshots dir: %+v", r)
	}
	for _, id := range []string{"a1", "b2"} {
		d := filepath.Join(state, "snapshots", id)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "state"), make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := checkSnapshots(state)
	if r.Status != OK || !strings.Contains(r.Detail, "2 snapshots") || !strings.Contains(r.Detail, "2.0 MiB") {
		t.Fatalf("two snapshots of 1 MiB: %+v", r)
	}
}
