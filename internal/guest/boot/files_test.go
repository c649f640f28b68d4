package boot

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFileAtomicChangedAndOwner(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authorized_keys")
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 4321, 8765
	}
	changed, err := writeFileAtomic(path, []byte("k\n"), 0o600, uid, gid)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); uid != -1 && (int(st.Uid) != uid || int(st.Gid) != gid) {
		t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	// The same content, mode and owner: nothing written, same inode.
	changed, err = writeFileAtomic(path, []byte("k\n"), 0o600, uid, gid)
	if err != nil || changed {
		t.Fatalf("same write: changed=%v err=%v", changed, err)
	}
	if fi2, _ := os.Lstat(path); !os.SameFile(fi, fi2) {
		t.Error("an unchanged file was replaced")
	}
	// Another mode is a change.
	if changed, err = writeFileAtomic(path, []byte("k\n"), 0o644, uid, gid); err != nil || !changed {
		t.Fatalf("mode change: changed=%v err=%v", changed, err)
	}
	// A failure names the file and leaves no temporary file.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := writeFileAtomic(filepath.Join(dir, "d"), []byte("x"), 0o644, -1, -1); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "d")) {
		t.Fatalf("writing over a directory: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
