package treestate

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSnapshotSeesEveryKindOfChange(t *testing.T) {
	root := t.TempDir()
	f := filepath.Join(root, "d", "f")
	os.MkdirAll(filepath.Dir(f), 0o755)
	os.WriteFile(f, []byte("one"), 0o644)
	os.Symlink("f", filepath.Join(root, "d", "l"))
	before := Snapshot(t, root)
	for _, p := range []string{".", "d", "d/f", "d/l"} {
		if _, ok := before[p]; !ok {
			t.Fatalf("%s not recorded: %v", p, before)
		}
	}
	if e := before["d/l"]; e.Link != "f" || e.Mode&os.ModeSymlink == 0 {
		t.Errorf("symlink recorded as %+v", e)
	}
	if e := before["d/f"]; e.Size != 3 || e.Sum == ([32]byte{}) {
		t.Errorf("file recorded as %+v", e)
	}
	changes := []func(){
		func() { os.WriteFile(f, []byte("two"), 0o644) },                                                    // same size, other bytes
		func() { os.Chmod(f, 0o600) },                                                                       // mode
		func() { old := time.Unix(1000, 0); os.Chtimes(f, old, old) },                                       // mtime
		func() { os.Remove(filepath.Join(root, "d", "l")); os.Symlink("g", filepath.Join(root, "d", "l")) }, // link target
	}
	prev := before
	for i, change := range changes {
		change()
		now := Snapshot(t, root)
		same := len(now) == len(prev)
		for p, e := range prev {
			if now[p] != e {
				same = false
			}
		}
		if same {
			t.Errorf("change %d went unseen", i)
		}
		prev = now
	}
	if _, ok := Snapshot(t, root)["d/l"]; !ok {
		t.Error("symlink lost")
	}
}
