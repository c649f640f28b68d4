package kernelprep

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeKernelTree writes an extracted kernel package: a bzImage and modules
// with the dependency shape of Debian's for a few of the default modules.
func fakeKernelTree(t *testing.T, root string) []byte {
	t.Helper()
	raw := testELF(t, 30_000, elf.EM_X86_64)
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+testRelease), bzImage(gzipped(t, raw), len(raw), true), 0o644)
	md := filepath.Join(root, "lib", "modules", testRelease)
	writeModules(t, md,
		mod("kernel/drivers/virtio/virtio.ko", ""),
		mod("kernel/drivers/virtio/virtio_ring.ko", ""),
		mod("kernel/drivers/virtio/virtio_mmio.ko.xz", "virtio,virtio_ring"),
		mod("kernel/drivers/block/virtio_blk.ko.zst", "virtio,virtio_ring"),
		mod("kernel/fs/jbd2/jbd2.ko", "", "softdep=pre: crypto-crc32c"),
		mod("kernel/crypto/crc32c_generic.ko", "", "alias=crypto-crc32c"),
		mod("kernel/fs/ext4/ext4.ko", "jbd2", "softdep=pre: crypto-crc32c"),
	)
	os.WriteFile(filepath.Join(md, "modules.builtin"), []byte("kernel/lib/crc16.ko\n"), 0o644)
	return raw
}

var testModules = []string{"virtio_mmio", "virtio_blk", "ext4"}

func testInit(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "init")
	os.WriteFile(p, testELF(t, 1000, elf.EM_X86_64), 0o755)
	return p
}

// leftovers lists what is in dir apart from the names given.
func leftovers(t *testing.T, dir string, allowed ...string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		ok := false
		for _, a := range allowed {
			ok = ok || e.Name() == a
		}
		if !ok {
			out = append(out, e.Name())
		}
	}
	return out
}

func checkArtefacts(t *testing.T, a Artefacts, raw []byte) {
	t.Helper()
	got, err := os.ReadFile(a.Vmlinux)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("vmlinux not the decompressed kernel (%v)", err)
	}
	if a.Release != testRelease {
		t.Fatalf("release %q", a.Release)
	}
	want := []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_blk", "crc32c_generic", "jbd2", "ext4"}
	if !reflect.DeepEqual(a.Modules, want) {
		t.Fatalf("module order %v, want %v", a.Modules, want)
	}
	if _, err := os.Stat(filepath.Join(a.ModulesDir, testRelease, "kernel", "drivers", "virtio", "virtio_mmio.ko.xz")); err != nil {
		t.Fatalf("module tree not installed: %v", err)
	}
	initrdData, err := os.ReadFile(a.Initrd)
	if err != nil || len(initrdData) < 2 || initrdData[0] != 0x1f || initrdData[1] != 0x8b {
		t.Fatalf("initrd missing or not gzip: %v", err)
	}
	back, err := ReadArtefacts(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	back.Modules = a.Modules
	if !reflect.DeepEqual(back, a) {
		t.Fatalf("ReadArtefacts = %+v, want %+v", back, a)
	}
}

func TestPrepareFromTree(t *testing.T) {
	src := t.TempDir()
	raw := fakeKernelTree(t, src)
	parent := t.TempDir()
	dst := filepath.Join(parent, "kernel")
	var steps []string
	a, err := Prepare(context.Background(), src, dst, Options{Init: testInit(t), Modules: testModules,
		Progress: func(s string) { steps = append(steps, s) }})
	if err != nil {
		t.Fatal(err)
	}
	checkArtefacts(t, a, raw)
	if len(steps) < 3 {
		t.Fatalf("progress steps %v", steps)
	}
	if l := leftovers(t, parent, "kernel"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	// The source tree is copied, not moved.
	if _, err := os.Stat(filepath.Join(src, "lib", "modules", testRelease, "kernel", "fs", "ext4", "ext4.ko")); err != nil {
		t.Fatal("source tree was changed")
	}

	// Preparing again replaces the directory as a whole.
	os.WriteFile(filepath.Join(dst, "stale"), []byte("x"), 0o644)
	if _, err := Prepare(context.Background(), src, dst, Options{Init: testInit(t), Modules: testModules}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "stale")); err == nil {
		t.Fatal("the old directory's contents survived a replace")
	}
	if l := leftovers(t, parent, "kernel"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

func TestPrepareFromDeb(t *testing.T) {
	tree := t.TempDir()
	raw := fakeKernelTree(t, tree)
	var entries []debEntry
	filepath.Walk(tree, func(p string, info os.FileInfo, err error) error {
		rel, _ := filepath.Rel(tree, p)
		if info.IsDir() {
			entries = append(entries, debEntry{name: "./" + rel + "/", typ: tar.TypeDir})
		} else {
			data, _ := os.ReadFile(p)
			entries = append(entries, debEntry{name: "./" + rel, typ: tar.TypeReg, data: data})
		}
		return nil
	})
	deb := filepath.Join(t.TempDir(), "linux-image.deb")
	buildDeb(t, deb, "zst", entries)
	parent := t.TempDir()
	a, err := Prepare(context.Background(), deb, filepath.Join(parent, "k"), Options{Init: testInit(t), Modules: testModules})
	if err != nil {
		t.Fatal(err)
	}
	checkArtefacts(t, a, raw)
	if l := leftovers(t, a.Dir, VmlinuxName, InitrdName, ModulesName); len(l) > 0 {
		t.Fatalf("unexpected files in the result: %v", l)
	}
	if l := leftovers(t, parent, "k"); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

func TestPrepareFailureLeavesNothing(t *testing.T) {
	src := t.TempDir()
	fakeKernelTree(t, src)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := map[string]struct {
		ctx  context.Context
		opts Options
		want string
	}{
		"missing module": {context.Background(), Options{Init: testInit(t), Modules: []string{"ext4", "virtio_net"}}, `"virtio_net" not found`},
		"no init":        {context.Background(), Options{Modules: testModules}, "no init binary"},
		"canceled":       {canceled, Options{Init: testInit(t), Modules: testModules}, "context canceled"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "kernel")
			// An existing result must survive a failed replace.
			os.Mkdir(dst, 0o755)
			os.WriteFile(filepath.Join(dst, "old"), []byte("keep"), 0o644)
			_, err := Prepare(c.ctx, src, dst, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
			if l := leftovers(t, parent, "kernel"); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
			if b, err := os.ReadFile(filepath.Join(dst, "old")); err != nil || string(b) != "keep" {
				t.Fatal("the previous result was damaged")
			}
		})
	}
	if _, err := Prepare(context.Background(), filepath.Join(src, "nope.deb"), filepath.Join(t.TempDir(), "k"), Options{Init: testInit(t)}); err == nil {
		t.Fatal("a missing source was accepted")
	}
}
