package tarx

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testutil/treestate"
)

// hostileSeeds are tar streams a hostile guest might send for a copy whose
// name is "top".
func hostileSeeds(t testing.TB) [][]byte {
	mk := func(hs ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hs {
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		_ = tw.Close()
		return b.Bytes()
	}
	dir := func(n string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755} }
	reg := func(n string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeReg, Size: 3} }
	sym := func(n, l string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeSymlink, Linkname: l} }
	hard := func(n, l string) *tar.Header { return &tar.Header{Name: n, Typeflag: tar.TypeLink, Linkname: l} }
	return [][]byte{
		mk(reg("top")),
		mk(dir("top/"), reg("top/a"), dir("top/d/"), reg("top/d/b"), sym("top/l", "a"), hard("top/h", "top/a")),
		mk(reg("../outside/secret")),
		mk(reg("top/../existing")),
		mk(reg("/etc/evil")),
		mk(sym("top", "../outside"), reg("top/secret")),
		mk(dir("top/"), sym("top/l", "../../outside"), reg("top/l/secret")),
		mk(dir("top/"), sym("top/l", "."), reg("top/l/l/x")),
		mk(hard("top", "/etc/passwd")),
		mk(hard("top", "existing")),
		mk(reg("existing")),
		mk(reg("top"), reg("top")),
		mk(&tar.Header{Name: "top", Typeflag: tar.TypeReg, Mode: 0o6777, Size: 3}),
		mk(dir("top/"), &tar.Header{Name: "top/sda", Typeflag: tar.TypeBlock, Devmajor: 8}, &tar.Header{Name: "top/p", Typeflag: tar.TypeFifo}),
		mk(&tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o500}, reg("top/f")),
		mk(reg("top"), sym("top", "../outside/secret")),
	}
}

// FuzzExtract feeds arbitrary streams to Extract as the host takes a
// guest's copy-out, and checks that nothing outside dst/top changes, that
// a failed strict extraction leaves nothing, and that no setuid bit,
// device or FIFO is ever created.
func FuzzExtract(f *testing.F) {
	for _, s := range hostileSeeds(f) {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, replace bool) {
		base := t.TempDir()
		dst := filepath.Join(base, "dst")
		outside := filepath.Join(base, "outside")
		for _, d := range []string{dst, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{filepath.Join(dst, "existing"), filepath.Join(outside, "secret")} {
			if err := os.WriteFile(p, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("../outside", filepath.Join(dst, "out")); err != nil {
			t.Fatal(err)
		}
		if replace {
			// An existing top, with a symlink out in it, to replace into.
			if err := os.Mkdir(filepath.Join(dst, "top"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../../outside/secret", filepath.Join(dst, "top", "secret")); err != nil {
				t.Fatal(err)
			}
		}
		before := treestate.Snapshot(t, base)
		err := Extract(context.Background(), bytes.NewReader(data), dst, Options{
			Top: "top", Replace: replace, Skip: func(string, string) {}, MaxEntries: 200, MaxTrailer: 4096,
		})
		// Let the walk below into directories the stream made unreadable.
		_ = filepath.WalkDir(filepath.Join(dst, "top"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
		after := treestate.Snapshot(t, base)
		for p, b := range before {
			if strings.HasPrefix(p, filepath.Join("dst", "top")) {
				continue
			}
			if a, ok := after[p]; !ok || (a != b && p != "dst") {
				t.Fatalf("%s changed: %+v -> %+v (err %v)", p, b, a, err)
			}
		}
		for p, a := range after {
			if _, ok := before[p]; ok {
				continue
			}
			if p != filepath.Join("dst", "top") && !strings.HasPrefix(p, filepath.Join("dst", "top")+"/") {
				t.Fatalf("%s was created outside dst/top (err %v)", p, err)
			}
			if err != nil && !replace {
				t.Fatalf("%s left behind by a failed extraction: %v", p, err)
			}
			if a.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
				t.Fatalf("%s: mode %v", p, a.Mode)
			}
		}
	})
}
