package ociimage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRootlessXattrsAreBounded: an import without root keeps every
// xattr in memory until mkfs. A layer entry's PAX header may hold a MiB
// of them, and an image half a million entries (a few KiB once
// compressed): without a bound a hostile image makes the daemon run out
// of memory. A value no debugfs command can write fails the import at
// once, and all values together are bounded.
func TestRootlessXattrsAreBounded(t *testing.T) {
	newRoot := func(t *testing.T) string {
		root := filepath.Join(t.TempDir(), "rootfs")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		return root
	}
	t.Run("one long value", func(t *testing.T) {
		a := newRootlessApplier(newRoot(t), Limits{})
		layer := mkTar(t, withXattr(file("f", "x", 0o644, 0, 0), "user.big", strings.Repeat("v", 900<<10)))
		err := a.apply(context.Background(), strings.NewReader(string(layer)), "l1")
		if err == nil || !strings.Contains(err.Error(), "import as root") {
			t.Fatalf("got %v, want the import refused at once", err)
		}
		if a.xattrBytes > 64<<10 {
			t.Fatalf("%d bytes of xattrs kept", a.xattrBytes)
		}
	})
	t.Run("many short values", func(t *testing.T) {
		defer func(n int64) { maxKeptXattrBytes = n }(maxKeptXattrBytes)
		maxKeptXattrBytes = 1 << 20
		a := newRootlessApplier(newRoot(t), Limits{})
		var es []ent
		for i := range 200 {
			e := file(fmt.Sprintf("f%d", i), "x", 0o644, 0, 0)
			for k := range 8 {
				e = withXattr(e, fmt.Sprintf("user.k%d", k), strings.Repeat("v", 1500))
			}
			es = append(es, e)
		}
		err := a.apply(context.Background(), strings.NewReader(string(mkTar(t, es...))), "l1")
		if err == nil || !strings.Contains(err.Error(), "import as root") {
			t.Fatalf("got %v, want the import refused past the bound", err)
		}
		if a.xattrBytes > maxKeptXattrBytes+64<<10 {
			t.Fatalf("%d bytes of xattrs kept", a.xattrBytes)
		}
	})
}
