package imagemgr_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/catalog"
	"banger/internal/daemon/imagemgr"
	"banger/internal/kernelprep/newc"
)

// TestRegisterRefusesFilesThatAreNotDisks registers what a careless or
// hostile user might hand over as a root disk: every one is refused with a
// message that says what the file is and how to make the right one, and
// nothing is recorded.
func TestRegisterRefusesFilesThatAreNotDisks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "k")
	shadow := filepath.Join(f.user, "shadow")
	if err := os.WriteFile(shadow, []byte("root:$y$j9T$abc:19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	random, _ := f.userFile(t, "random.img", 1<<20)
	fifo := filepath.Join(f.user, "fifo.img")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	devLink := filepath.Join(f.user, "disk.img")
	if err := os.Symlink("/dev/zero", devLink); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, want string }{
		{shadow, "refusing " + shadow + " as a root filesystem: it is not an ext4 image (only 35 bytes, too small to hold an ext4 superblock); make one with mkfs.ext4 -d DIR FILE SIZE"},
		{random, "refusing " + random + " as a root filesystem: it is not an ext4 image (no ext4 superblock); make one with mkfs.ext4"},
		{"/proc/self/environ", "refusing /proc/self/environ as a root filesystem: /proc/"},
		{fifo, "refusing " + fifo + " as a root filesystem: " + fifo + " is a fifo, not a regular file"},
		{f.user, "is a directory, not a regular file"},
		{devLink, "refusing " + devLink + " as a root filesystem: /dev/zero (where " + devLink + " leads) is a character device, not a regular file"},
	}
	if _, err := os.Stat("/etc/shadow"); err == nil {
		cases = append(cases, struct{ path, want string }{"/etc/shadow", "refusing /etc/shadow as a root filesystem: "})
	}
	for _, c := range cases {
		_, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "evil", Rootfs: c.path, Kernel: "k"})
		var in *imagemgr.InputError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &in) {
			t.Errorf("register --rootfs %s = %v, want an input error containing %q", c.path, err, c.want)
		}
		if strings.HasPrefix(c.path, "/proc/") && err != nil && !strings.Contains(err.Error(), "kernel pseudo-filesystem") {
			t.Errorf("register --rootfs %s = %v, want it named a pseudo-filesystem file", c.path, err)
		}
	}
	// The same files as a work seed or an initrd are refused too.
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 8192)
	for _, req := range []imagemgr.RegisterRequest{
		{Name: "evil", Rootfs: rootfs, Kernel: "k", WorkSeed: shadow},
		{Name: "evil", Rootfs: rootfs, Kernel: "k", WorkSeed: devLink},
		{Name: "evil", Rootfs: rootfs, Kernel: "k", Initrd: shadow},
		{Name: "evil", Rootfs: rootfs, Kernel: "k", Initrd: random},
		{Name: "evil", Rootfs: rootfs, Kernel: "k", Initrd: fifo},
		{Name: "evil", Rootfs: rootfs, Kernel: "k", Initrd: rootfs},
	} {
		_, err := f.m.RegisterImage(ctx, req)
		if err == nil || !strings.Contains(err.Error(), "refusing ") {
			t.Errorf("RegisterImage(%+v) = %v, want a refusal", req, err)
		}
		if req.WorkSeed != "" && err != nil && !strings.Contains(err.Error(), "as a work seed") {
			t.Errorf("work seed refusal = %v", err)
		}
		if req.Initrd != "" && err != nil && !strings.Contains(err.Error(), "as an initrd") {
			t.Errorf("initrd refusal = %v", err)
		}
	}
	if ims, _ := f.m.Images(ctx); len(ims) != 0 {
		t.Fatalf("refused files were registered: %+v", ims)
	}
}

// TestRegisterAcceptsRealImages registers a real mkfs.ext4 image as rootfs
// and work seed, through a symlink, with a gzip-compressed cpio initrd: the
// resolved paths are recorded.
func TestRegisterAcceptsRealImages(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "k")
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		mkfs = "/sbin/mkfs.ext4"
		if _, err := os.Stat(mkfs); err != nil {
			t.Skip("mkfs.ext4 (e2fsprogs) is not installed; it makes the real ext4 image this test needs")
		}
	}
	rootfs := filepath.Join(f.user, "rootfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", rootfs, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	link := filepath.Join(f.user, "current.ext4")
	if err := os.Symlink("rootfs.ext4", link); err != nil {
		t.Fatal(err)
	}
	var cpio bytes.Buffer
	w := newc.NewWriter(&cpio)
	_ = w.File("init", 0o755, []byte("#!/bin/sh\n"))
	_ = w.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(cpio.Bytes())
	_ = zw.Close()
	initrd := filepath.Join(f.user, "initrd.img")
	if err := os.WriteFile(initrd, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "real", Rootfs: link, WorkSeed: rootfs, Initrd: initrd, Kernel: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if im.RootfsPath != rootfs || im.WorkSeedPath != rootfs || im.InitrdPath != initrd || im.SizeBytes != 8<<20 || im.KernelRef != "k" {
		t.Fatalf("registered %+v", im)
	}
	// A bare cpio initrd is an initrd too.
	if err := os.WriteFile(initrd, cpio.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "bare", Rootfs: rootfs, Initrd: initrd, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
}

// TestRegisterDecidesTheKernel: an image is refused at register time when
// it has no kernel banger could boot it with, instead of at vm create.
func TestRegisterDecidesTheKernel(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "mine")
	kc, err := catalog.Parse(catalog.Kernels, []byte(`{"entries":[{"name":"cat-kern","version":"1","arch":"x86_64","bundle":{"url":"k.tar.zst","sha256":"`+strings.Repeat("0", 64)+`","size":1}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f.m.SetCatalogs(imagemgr.Catalogs{Kernels: kc})
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 8192)
	fixed := func(k string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return k, nil }
	}
	refused := []struct {
		req  imagemgr.RegisterRequest
		want string
	}{
		{imagemgr.RegisterRequest{Name: "a", Rootfs: rootfs}, `image "a" needs a kernel to boot: give one with --kernel NAME`},
		{imagemgr.RegisterRequest{Name: "a", Rootfs: rootfs, Kernel: "nope"}, `--kernel "nope" is neither an installed kernel (installed: mine) nor in the kernel catalog (catalog: cat-kern)`},
		{imagemgr.RegisterRequest{Name: "a", Rootfs: rootfs, DefaultKernel: fixed("gone")}, `the default kernel "gone" is neither an installed kernel`},
		{imagemgr.RegisterRequest{Name: "a", Rootfs: rootfs, DefaultKernel: func(context.Context) (string, error) {
			return "", &imagemgr.InputError{Err: errors.New("no default image")}
		}}, "no default image"},
	}
	for _, c := range refused {
		if _, err := f.m.RegisterImage(ctx, c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RegisterImage(kernel %q) = %v, want %q", c.req.Kernel, err, c.want)
		}
	}
	accepted := []struct {
		req  imagemgr.RegisterRequest
		want string
	}{
		{imagemgr.RegisterRequest{Name: "b", Rootfs: rootfs, Kernel: "mine"}, "mine"},
		{imagemgr.RegisterRequest{Name: "c", Rootfs: rootfs, Kernel: "cat-kern"}, "cat-kern"},
		{imagemgr.RegisterRequest{Name: "d", Rootfs: rootfs, DefaultKernel: fixed("cat-kern")}, "cat-kern"},
		{imagemgr.RegisterRequest{Name: "e", Rootfs: rootfs, Kernel: "mine", DefaultKernel: fixed("cat-kern")}, "mine"},
	}
	for _, c := range accepted {
		im, err := f.m.RegisterImage(ctx, c.req)
		if err != nil || im.KernelRef != c.want {
			t.Errorf("RegisterImage(%s) = %q, %v; want kernel %q", c.req.Name, im.KernelRef, err, c.want)
		}
	}
}

// TestPromoteChecksFilesAgain: a registered file replaced by something that
// is not a disk (or a link to a device) is refused by promote, which leaves
// the image unmanaged and nothing under the state dir, and by CheckFiles.
func TestPromoteChecksFilesAgain(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "k")
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 1<<20)
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "img", Rootfs: rootfs, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	im, err := f.m.Image(ctx, "img")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.CheckFiles(im); err != nil {
		t.Fatalf("CheckFiles of untouched files = %v", err)
	}
	garbage := make([]byte, 1<<20)
	_, _ = rand.Read(garbage)
	if err := os.WriteFile(rootfs, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.PromoteImage(ctx, "img", nil); err == nil || !strings.Contains(err.Error(), "it is not an ext4 image (no ext4 superblock)") {
		t.Fatalf("promote of a replaced rootfs = %v", err)
	}
	if err := f.m.CheckFiles(im); err == nil || !strings.Contains(err.Error(), "no ext4 superblock") {
		t.Fatalf("CheckFiles of a replaced rootfs = %v", err)
	}
	if err := os.Remove(rootfs); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", rootfs); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.PromoteImage(ctx, "img", nil); err == nil || !strings.Contains(err.Error(), "is a character device, not a regular file") {
		t.Fatalf("promote of a rootfs replaced by a device link = %v", err)
	}
	if err := f.m.CheckFiles(im); err == nil || !strings.Contains(err.Error(), "is a character device") {
		t.Fatalf("CheckFiles of a rootfs replaced by a device link = %v", err)
	}
	im, err = f.m.Image(ctx, "img")
	if err != nil || im.Managed {
		t.Fatalf("image after refused promotes = %+v, %v", im, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.state, "images")); len(ents) != 0 {
		t.Fatalf("refused promote left %v", ents)
	}
}
