package daemon

import (
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/imagemgr"
)

// TestDefaultSnapshotNameIsValid: the name picked for a snapshot asked for
// without one is a valid name for every valid VM name, the longest too.
func TestDefaultSnapshotNameIsValid(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 30, 5, 0, time.FixedZone("x", 3600))
	for vm, want := range map[string]string{
		"dev":                            "dev-20261203-073005",
		strings.Repeat("a", 63):          strings.Repeat("a", 47) + "-20261203-073005",
		strings.Repeat("a", 46) + "-b.c": strings.Repeat("a", 46) + "-20261203-073005",
	} {
		if err := imagemgr.ValidName("VM", vm); err != nil {
			t.Fatalf("fixture %q: %v", vm, err)
		}
		got := defaultSnapshotName(vm, now)
		if got != want {
			t.Errorf("defaultSnapshotName(%q) = %q, want %q", vm, got, want)
		}
		if err := imagemgr.ValidName("snapshot", got); err != nil {
			t.Errorf("defaultSnapshotName(%q) = %q: %v", vm, got, err)
		}
	}
}
