package doctor_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/doctor"
)

// TestStateDirIsAFile: a state_dir that is a file (or lies under one)
// cannot hold bangerd's store; doctor must fail on it rather than measure
// the free space of its parent and call it fine, and must write nothing
// beside it (the reflink test made its files in the parent).
func TestStateDirIsAFile(t *testing.T) {
	for _, sub := range []string{"", "sub"} {
		f := newFakeHost(t)
		s := settings(t)
		parent := s.StateDir
		file := filepath.Join(parent, "state")
		if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.StateDir = filepath.Join(file, sub)
		rs := run(f.host(0), s)
		expect(t, find(t, rs, "state-dir"), doctor.Fail, "not a directory", "set state_dir to a directory")
		if r := find(t, rs, "reflink"); !strings.Contains(r.Detail, "not a directory") {
			t.Errorf("reflink detail %q", r.Detail)
		}
		ents, _ := os.ReadDir(parent)
		if len(ents) != 1 {
			t.Errorf("doctor left files beside the state dir: %v", ents)
		}
	}
}
