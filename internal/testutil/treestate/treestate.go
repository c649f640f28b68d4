package treestate

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Entry is the state of one path. Size, Sum and MTime are set for regular
// files only; Link for symlinks only.
type Entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Link     string
	Size     int64
	Sum      [32]byte // sha256 of the contents; zero when they cannot be read
	MTime    int64    // seconds since the epoch
}

// Snapshot records every path under root (root itself as "."), by path
// relative to root. A walk error fails the test.
func Snapshot(t testing.TB, root string) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := Entry{Mode: fi.Mode()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			e.UID, e.GID = st.Uid, st.Gid
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			e.Size, e.MTime = fi.Size(), fi.ModTime().Unix()
			if b, err := os.ReadFile(p); err == nil {
				e.Sum = sha256.Sum256(b)
			}
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("record the tree under %s: %v", root, err)
	}
	return out
}
