package kernelprep

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testRelease = "6.1.0-99-test"

func kernelDebEntries(t testing.TB) []debEntry {
	raw := testELF(t, 20_000, elf.EM_X86_64)
	return []debEntry{
		{name: "./", typ: tar.TypeDir},
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/vmlinuz-" + testRelease, typ: tar.TypeReg, data: bzImage(gzipped(t, raw), len(raw), true)},
		{name: "./boot/config-" + testRelease, typ: tar.TypeReg, data: []byte("CONFIG_X=y\n")},
		{name: "./lib/modules/" + testRelease + "/", typ: tar.TypeDir},
		{name: "./lib/modules/" + testRelease + "/kernel/drivers/virtio/virtio.ko", typ: tar.TypeReg, data: testKO(t, "name=virtio", "depends=")},
		{name: "./lib/modules/" + testRelease + "/modules.builtin", typ: tar.TypeReg, data: []byte("kernel/lib/crc32.ko\n")},
		{name: "./lib/modules/" + testRelease + "/kernel/alias.ko", typ: tar.TypeSymlink, linkname: "drivers/virtio/virtio.ko"},
		{name: "./usr/share/doc/linux-image/changelog.gz", typ: tar.TypeReg, data: []byte("skipped")},
	}
}

func TestReadDeb(t *testing.T) {
	for _, comp := range []string{"xz", "zst", "gz"} {
		t.Run(comp, func(t *testing.T) {
			dir := t.TempDir()
			deb := filepath.Join(dir, "k.deb")
			buildDeb(t, deb, comp, kernelDebEntries(t))
			dst := filepath.Join(dir, "x")
			os.Mkdir(dst, 0o755)
			tree, err := ReadDeb(context.Background(), deb, dst)
			if err != nil {
				t.Fatal(err)
			}
			if tree.Release != testRelease || tree.Kernel != filepath.Join(dst, "boot", "vmlinuz-"+testRelease) ||
				tree.ModulesDir != filepath.Join(dst, "lib", "modules", testRelease) {
				t.Fatalf("tree = %+v", tree)
			}
			if _, err := ExtractVmlinuxFile(tree.Kernel); err != nil {
				t.Fatalf("extracted kernel image unusable: %v", err)
			}
			if l, err := os.Readlink(filepath.Join(tree.ModulesDir, "kernel", "alias.ko")); err != nil || l != "drivers/virtio/virtio.ko" {
				t.Fatalf("symlink: %q, %v", l, err)
			}
			for _, skipped := range []string{"usr", "boot/config-" + testRelease} {
				if _, err := os.Stat(filepath.Join(dst, skipped)); err == nil {
					t.Errorf("%s was extracted; only the kernel image and modules should be", skipped)
				}
			}
		})
	}
}

func TestReadDebUsrLibModules(t *testing.T) {
	dir := t.TempDir()
	var entries []debEntry
	for _, e := range kernelDebEntries(t) {
		e.name = strings.Replace(e.name, "./lib/modules/", "./usr/lib/modules/", 1)
		entries = append(entries, e)
	}
	deb := filepath.Join(dir, "k.deb")
	buildDeb(t, deb, "xz", entries)
	tree, err := ReadDeb(context.Background(), deb, dir)
	if err != nil {
		t.Fatal(err)
	}
	if tree.ModulesDir != filepath.Join(dir, "lib", "modules", testRelease) {
		t.Fatalf("modules landed in %s, want lib/modules/%s", tree.ModulesDir, testRelease)
	}
}

func TestReadDebRefusesEscapes(t *testing.T) {
	cases := map[string]debEntry{
		"dotdot":           {name: "./lib/modules/../../../../escaped", typ: tar.TypeReg, data: []byte("x")},
		"dotdot in boot":   {name: "./boot/../../escaped", typ: tar.TypeReg, data: []byte("x")},
		"symlink out":      {name: "./lib/modules/" + testRelease + "/evil", typ: tar.TypeSymlink, linkname: "../../../../.."},
		"absolute link":    {name: "./lib/modules/" + testRelease + "/evil", typ: tar.TypeSymlink, linkname: "/etc"},
		"hardlink outside": {name: "./lib/modules/" + testRelease + "/evil", typ: tar.TypeLink, linkname: "./etc/shadow"},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dst := filepath.Join(root, "a", "b", "c", "d")
			os.MkdirAll(dst, 0o755)
			deb := filepath.Join(root, "k.deb")
			entries := kernelDebEntries(t)
			entries = append(entries[:5], append([]debEntry{bad}, entries[5:]...)...)
			buildDeb(t, deb, "xz", entries)
			_, err := ReadDeb(context.Background(), deb, dst)
			if err == nil || !strings.Contains(err.Error(), "refusing package entry") {
				t.Fatalf("err = %v, want a refusal", err)
			}
			if _, err := os.Lstat(filepath.Join(root, "escaped")); err == nil {
				t.Fatal("a file was written outside the destination")
			}
		})
	}
}

func TestReadDebRejectsNonDeb(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"empty":       nil,
		"not ar":      []byte("PK\x03\x04 zip file"),
		"no data":     []byte("!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n"),
		"wrong first": []byte("!<arch>\ncontrol.tar.gz  0           0     0     100644  4         `\nabcd"),
		"bad size":    []byte("!<arch>\ndebian-binary   0           0     0     100644  zz        `\n"),
		"truncated":   []byte("!<arch>\ndebian-binary   0           0     0     100644  400       `\n2.0\n"),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".deb")
			os.WriteFile(p, data, 0o644)
			if _, err := ReadDeb(context.Background(), p, t.TempDir()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestOpenTree(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenTree(dir); err == nil || !strings.Contains(err.Error(), "no kernel found") {
		t.Fatalf("empty dir: %v", err)
	}
	for _, rel := range []string{"6.1.0-1-amd64", "6.1.0-2-amd64"} {
		os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
		os.WriteFile(filepath.Join(dir, "boot", "vmlinuz-"+rel), []byte("x"), 0o644)
		os.MkdirAll(filepath.Join(dir, "lib", "modules", rel), 0o755)
	}
	if _, err := OpenTree(dir); err == nil || !strings.Contains(err.Error(), "several kernels") {
		t.Fatalf("two kernels: %v", err)
	}
	os.RemoveAll(filepath.Join(dir, "lib", "modules", "6.1.0-1-amd64"))
	tree, err := OpenTree(dir)
	if err != nil || tree.Release != "6.1.0-2-amd64" {
		t.Fatalf("tree %+v, %v", tree, err)
	}
}

func FuzzReadAr(f *testing.F) {
	f.Add([]byte("!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n"))
	f.Add([]byte("!<arch>\na/              0           0     0     100644  3         `\nabc\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		total := 0
		_ = readAr(bytes.NewReader(data), func(name string, size int64, body io.Reader) error {
			n, err := io.Copy(io.Discard, body)
			if n > size {
				t.Fatalf("member %q gave %d bytes, its size is %d", name, n, size)
			}
			total += int(n)
			return err
		})
		if total > len(data) {
			t.Fatalf("read %d member bytes from %d input bytes", total, len(data))
		}
	})
}
