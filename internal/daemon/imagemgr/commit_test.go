package imagemgr_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/imagemgr"
	"banger/internal/store"
)

// TestSweepRemovesUncommittedArtefacts plays the daemon killed between
// renaming a kernel or image into place and recording its row: the next
// start removes what no managed row claims, keeps (and unmarks) what one
// does, and leaves unmarked directories alone.
func TestSweepRemovesUncommittedArtefacts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	mk := func(dir string, marked bool) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "payload"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if marked {
			if err := os.WriteFile(filepath.Join(dir, ".uncommitted"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	orphanKernel := mk(f.m.KernelDir("0123456789abcdef"), true)
	recordedKernel := mk(f.m.KernelDir("1123456789abcdef"), true)
	promotedImage := mk(f.m.ImageDir("2123456789abcdef"), true) // row still unmanaged
	unknownImage := mk(f.m.ImageDir("3123456789abcdef"), false)
	now := time.Now()
	if err := f.st.PutKernel(ctx, store.Kernel{ID: "1123456789abcdef", Name: "rec", Managed: true,
		VmlinuxPath: filepath.Join(recordedKernel, "vmlinux"), OriginKind: store.OriginImport, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutImage(ctx, store.Image{ID: "2123456789abcdef", Name: "un", RootfsPath: "/elsewhere/rootfs.ext4",
		OriginKind: store.OriginRegister, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.SweepLeftovers(ctx); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{orphanKernel, promotedImage} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s was left (err %v); it is uncommitted and no managed row claims it", gone, err)
		}
	}
	for _, kept := range []string{recordedKernel, unknownImage} {
		if _, err := os.Stat(filepath.Join(kept, "payload")); err != nil {
			t.Errorf("%s lost its files: %v", kept, err)
		}
	}
	if _, err := os.Stat(filepath.Join(recordedKernel, ".uncommitted")); !os.IsNotExist(err) {
		t.Errorf("the recorded kernel is still marked uncommitted (err %v)", err)
	}
}

// TestCommittedArtefactsCarryNoMark checks that a kernel and an image made
// the ordinary way are unmarked once recorded, so that no sweep can take
// them.
func TestCommittedArtefactsCarryNoMark(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addKernel(t, "k")
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 1<<20)
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "mine", Rootfs: rootfs, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	im, err := f.m.PromoteImage(ctx, "mine", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(im.RootfsPath)
	if _, err := os.Stat(filepath.Join(dir, ".uncommitted")); !os.IsNotExist(err) {
		t.Fatalf("a promoted image is still marked uncommitted (err %v)", err)
	}
	if _, err := f.m.SweepLeftovers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(im.RootfsPath); err != nil {
		t.Fatalf("the sweep took a committed image: %v", err)
	}
}
