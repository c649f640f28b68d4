package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFileInStaysInRoot: a link at the target's directory or at the
// target itself, leading out of the root, is never written through.
func TestWriteFileInStaysInRoot(t *testing.T) {
	tree, host := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "f"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(tree, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "f"), filepath.Join(tree, "f")); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := WriteFileIn(r, "d/f", []byte("evil"), Mode(0o644)); err == nil {
		t.Error("a write through a directory link out of the root succeeded")
	}
	if err := WriteFileIn(r, "f", []byte("new"), Mode(0o640)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "f")); string(b) != "host" {
		t.Fatalf("the host file became %q", b)
	}
	fi, err := os.Lstat(filepath.Join(tree, "f"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 {
		t.Fatalf("f: %v, %v; want a regular file of mode 0640", fi, err)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 1 {
		t.Fatalf("the host directory holds %d entries", len(ents))
	}
	// A link inside the root is followed, as os.Root does.
	if err := os.Mkdir(filepath.Join(tree, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(tree, "in")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileIn(r, "in/g", []byte("g")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "real/g")); string(b) != "g" {
		t.Fatalf("real/g = %q", b)
	}
	if err := WriteFileIn(r, "real", []byte("x")); err == nil {
		t.Fatal("a directory was replaced by a file")
	}
}
