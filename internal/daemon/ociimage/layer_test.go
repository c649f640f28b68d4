package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// sandbox is a root inside a parent that also holds a canary directory; a
// layer must never change anything but root.
func sandbox(t testing.TB) (parent, root, canary string) {
	t.Helper()
	parent = t.TempDir()
	root = filepath.Join(parent, "root")
	canary = filepath.Join(parent, "canary")
	for _, d := range []string{root, canary} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return parent, root, canary
}

func checkContained(t testing.TB, parent, canary string) {
	t.Helper()
	if got := listDir(t, parent); !slices.Equal(got, []string{"canary", "root"}) {
		t.Fatalf("layer wrote outside the root: parent holds %v", got)
	}
	if got := listDir(t, canary); len(got) != 0 {
		t.Fatalf("layer wrote outside the root: canary holds %v", got)
	}
}

func TestApplyLayerRefusesEscapes(t *testing.T) {
	cases := []struct {
		name  string
		lower []ent // applied first, must succeed
		layer []ent
		entry string // the refused entry, as named in the error
	}{
		{name: "dotdot", layer: []ent{file("../canary/x", "x", 0o644, 0, 0)}, entry: "../canary/x"},
		{name: "absolute dotdot", layer: []ent{file("/../canary/x", "x", 0o644, 0, 0)}, entry: "/../canary/x"},
		{name: "inner dotdot", layer: []ent{file("a/../../canary/x", "x", 0o644, 0, 0)}, entry: "a/../../canary/x"},
		{name: "symlink parent relative", lower: []ent{symlink("up", "../canary")}, layer: []ent{file("up/x", "x", 0o644, 0, 0)}, entry: "up/x"},
		{name: "symlink parent absolute", lower: []ent{symlink("abs", "CANARY")}, layer: []ent{file("abs/x", "x", 0o644, 0, 0)}, entry: "abs/x"},
		{name: "symlink parent same layer", layer: []ent{symlink("up", "../canary"), dir("up/sub/", 0o755, 0, 0)}, entry: "up/sub/"},
		{name: "symlink grandparent", lower: []ent{symlink("up", "../canary")}, layer: []ent{file("up/a/b", "x", 0o644, 0, 0)}, entry: "up/a/b"},
		{name: "hardlink outside", layer: []ent{hardlink("h", "../canary/secret")}, entry: "h"},
		{name: "hardlink absolute outside", layer: []ent{hardlink("h", "/../../etc/passwd")}, entry: "h"},
		{name: "hardlink through symlink", lower: []ent{symlink("up", "../canary"), dir("d/", 0o755, 0, 0)}, layer: []ent{hardlink("d/h", "up/secret")}, entry: "d/h"},
		{name: "whiteout through symlink", lower: []ent{symlink("up", "../canary")}, layer: []ent{file("up/.wh.secret", "", 0o644, 0, 0)}, entry: "up/.wh.secret"},
		{name: "opaque through symlink", lower: []ent{symlink("up", "../canary")}, layer: []ent{file("up/.wh..wh..opq", "", 0o644, 0, 0)}, entry: "up/.wh..wh..opq"},
		{name: "whiteout dotdot", lower: []ent{dir("a/", 0o755, 0, 0)}, layer: []ent{file("a/.wh..", "", 0o644, 0, 0)}, entry: "a/.wh.."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parent, root, canary := sandbox(t)
			if err := os.WriteFile(filepath.Join(canary, "secret"), []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			fix := func(es []ent) []ent {
				for i := range es {
					es[i].h.Linkname = strings.ReplaceAll(es[i].h.Linkname, "CANARY", canary)
				}
				return es
			}
			if c.lower != nil {
				if err := ApplyLayer(root, bytes.NewReader(mkTar(t, fix(c.lower)...)), "lower"); err != nil {
					t.Fatalf("lower layer: %v", err)
				}
			}
			err := ApplyLayer(root, bytes.NewReader(mkTar(t, fix(c.layer)...)), "upper-7")
			if err == nil {
				t.Fatal("layer applied; want a refusal")
			}
			if !strings.Contains(err.Error(), "upper-7") || !strings.Contains(err.Error(), `"`+c.entry+`"`) {
				t.Fatalf("error %q does not name the layer and entry %q", err, c.entry)
			}
			if got := listDir(t, canary); !slices.Equal(got, []string{"secret"}) {
				t.Fatalf("canary changed: %v", got)
			}
			if got := listDir(t, parent); !slices.Equal(got, []string{"canary", "root"}) {
				t.Fatalf("parent changed: %v", got)
			}
			if b, _ := os.ReadFile(filepath.Join(canary, "secret")); string(b) != "s" {
				t.Fatalf("canary file changed: %q", b)
			}
		})
	}
}

func TestApplyLayerAbsoluteNamesAreRelative(t *testing.T) {
	parent, root, canary := sandbox(t)
	err := ApplyLayer(root, bytes.NewReader(mkTar(t, dir("/etc/", 0o755, 0, 0), file("/etc/hostname", "vm\n", 0o644, 0, 0), file("./etc/motd", "hi\n", 0o644, 0, 0))), "1")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"etc/hostname": "vm\n", "etc/motd": "hi\n"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}
	checkContained(t, parent, canary)
}

func TestApplyLayerReplacesAndOpaqueKeepsSameLayer(t *testing.T) {
	_, root, _ := sandbox(t)
	lower := mkTar(t,
		dir("d/", 0o755, 0, 0), file("d/old", "o", 0o644, 0, 0),
		dir("d/sub/", 0o755, 0, 0), file("d/sub/old", "o", 0o644, 0, 0),
		dir("x/", 0o755, 0, 0), file("x/inner", "i", 0o644, 0, 0),
		file("f", "file", 0o644, 0, 0),
	)
	if err := ApplyLayer(root, bytes.NewReader(lower), "1"); err != nil {
		t.Fatal(err)
	}
	// The opaque marker comes after entries of its own layer: those stay.
	upper := mkTar(t,
		file("d/sub/new", "n", 0o644, 0, 0),
		file("d/.wh..wh..opq", "", 0o644, 0, 0),
		symlink("x", "f"),      // a directory replaced by a symlink
		dir("f/", 0o755, 0, 0), // a file replaced by a directory
		file("x2", "y", 0o644, 0, 0),
	)
	if err := ApplyLayer(root, bytes.NewReader(upper), "2"); err != nil {
		t.Fatal(err)
	}
	exist := map[string]bool{"d/old": false, "d/sub/old": false, "d/sub/new": true, "x/inner": false}
	for p, want := range exist {
		_, err := os.Lstat(filepath.Join(root, p))
		if (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", p, err == nil, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "x")); err != nil || target != "f" {
		t.Errorf("x -> %q, %v", target, err)
	}
	if st, err := os.Lstat(filepath.Join(root, "f")); err != nil || !st.IsDir() {
		t.Errorf("f is not a directory: %v %v", st, err)
	}
	// A later layer whiting out a directory removes it whole.
	if err := ApplyLayer(root, bytes.NewReader(mkTar(t, file(".wh.d", "", 0o644, 0, 0))), "3"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "d")); !os.IsNotExist(err) {
		t.Errorf("d still exists after whiteout: %v", err)
	}
}

func TestApplyLayerRejectsGarbage(t *testing.T) {
	parent, root, canary := sandbox(t)
	err := ApplyLayer(root, strings.NewReader(strings.Repeat("not a tar stream ", 100)), "junk")
	if err == nil || !strings.Contains(err.Error(), "junk") {
		t.Fatalf("err = %v, want a tar error naming the layer", err)
	}
	checkContained(t, parent, canary)
}

func FuzzApplyLayer(f *testing.F) {
	f.Add(mkTar(f, dir("etc/", 0o755, 0, 0), file("etc/a", "a", 0o4755, 0, 0), hardlink("etc/b", "etc/a"), symlink("l", "etc")))
	f.Add(mkTar(f, symlink("up", "../canary"), file("up/x", "x", 0o644, 0, 0)))
	f.Add(mkTar(f, symlink("up", "/"), hardlink("h", "up/etc/passwd")))
	f.Add(mkTar(f, file("../canary/x", "x", 0o644, 0, 0)))
	f.Add(mkTar(f, dir("d/", 0o555, 0, 0), file("d/.wh..wh..opq", "", 0, 0, 0), file("d/f", "f", 0o644, 0, 0), file(".wh.d", "", 0, 0, 0)))
	f.Add(mkTar(f, fifo("p"), chardev("c", 1, 3), withXattr(file("x", "x", 0o644, 0, 0), "user.a", "b")))
	f.Add(mkTar(f, dir("a/", 0o755, 0, 0), symlink("a", "../canary"), dir("a/", 0o755, 0, 0)))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent, root, canary := sandbox(t)
		_ = ApplyLayer(root, bytes.NewReader(data), "fuzz")
		checkContained(t, parent, canary)
	})
}

// genLayer streams a tar of n entries made by mk without holding it in
// memory.
func genLayer(t testing.TB, n int, mk func(i int) *tar.Header) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := 0; i < n; i++ {
			if err := tw.WriteHeader(mk(i)); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	t.Cleanup(func() { _ = pr.Close() })
	return pr
}

func TestApplyLayerBoundsEntries(t *testing.T) {
	root := t.TempDir()
	// Whiteouts of missing files: the cheapest entries to stream, and ones an
	// attacker could send by the million.
	layer := genLayer(t, DefaultMaxEntries+1, func(i int) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d/.wh.f%d", i), Mode: 0o644}
	})
	err := ApplyLayer(root, layer, "bomb-1")
	if err == nil || !strings.Contains(err.Error(), "bomb-1") || !strings.Contains(err.Error(), "oci_max_entries") ||
		!strings.Contains(err.Error(), strconv.Itoa(DefaultMaxEntries)) {
		t.Fatalf("a layer of %d entries: err = %v, want a refusal naming the layer, the limit and its key", DefaultMaxEntries+1, err)
	}

	// The count runs over all layers of an image.
	a := testApplier(t.TempDir(), Limits{MaxEntries: 1500})
	mk := func(i int) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%d/", i), Mode: 0o755}
	}
	if err := a.apply(context.Background(), genLayer(t, 1000, mk), "1/2"); err != nil {
		t.Fatalf("first layer, under the limit: %v", err)
	}
	err = a.apply(context.Background(), genLayer(t, 1000, mk), "2/2")
	if err == nil || !strings.Contains(err.Error(), "more than 1500 entries") {
		t.Fatalf("second layer over the image's limit: err = %v", err)
	}
}

func TestApplyLayerBoundsPathBytes(t *testing.T) {
	a := testApplier(t.TempDir(), Limits{MaxPathBytes: 1 << 20})
	long := strings.Repeat(strings.Repeat("n", 199)+"/", 18)
	layer := genLayer(t, 300, func(i int) *tar.Header { // 300 × 3.6 kB > 1 MiB
		return &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s%d/.wh.x", long, i), Mode: 0o644, Format: tar.FormatPAX}
	})
	err := a.apply(context.Background(), layer, "long-names")
	if err == nil || !strings.Contains(err.Error(), "oci_max_path_bytes") || !strings.Contains(err.Error(), "long-names") {
		t.Fatalf("names over the limit: err = %v", err)
	}
}

// TestApplierMemoryStaysBounded applies 10k directories (the entries that
// cost the applier the most state) and reports the heap they left; it fails
// only when an entry costs far more than the documented few hundred bytes.
func TestApplierMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: writes 10k directories")
	}
	const n = 10_000
	a := testApplier(t.TempDir(), Limits{MaxEntries: n})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	layer := genLayer(t, n, func(i int) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("a%d/b%d/", i%100, i), Mode: 0o755}
	})
	if err := a.apply(context.Background(), layer, "wide"); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d entries: %d bytes of heap each", n, per)
	if per > 2000 {
		t.Fatalf("%d bytes of heap per entry; the applier's state is not bounded as documented", per)
	}
	runtime.KeepAlive(a)
}

// testApplier is the applier ApplyLayer would use: the faithful one as
// root, the rootless one as a user.
func testApplier(root string, l Limits) *applier {
	if os.Geteuid() != 0 {
		return newRootlessApplier(root, l)
	}
	return newApplier(root, l)
}

// TestApplyLayerSaysWhyAnOwnerFails: the faithful applier run without the
// privilege it needs says what the import cannot do and what to change.
func TestApplyLayerSaysWhyAnOwnerFails(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("as root every owner can be given; run as a user to test the refusal")
	}
	a := newApplier(t.TempDir(), Limits{})
	layer := mkTar(t, file("f", "x", 0o644, 4321, 4321))
	err := a.apply(context.Background(), bytes.NewReader(layer), "owned")
	if err == nil || !strings.Contains(err.Error(), "owned") || !strings.Contains(err.Error(), "user namespace") {
		t.Fatalf("got %v, want the layer named and the user namespace hint", err)
	}
}
