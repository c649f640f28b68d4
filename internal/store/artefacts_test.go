package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestKernelAndImageRoundTripAndInUse(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	now := time.Date(2026, 11, 28, 10, 0, 0, 123, time.UTC)
	k := Kernel{ID: "k1", Name: "debian-6.1", VmlinuxPath: "/s/k/vmlinux", InitrdPath: "/s/k/initrd.img",
		Modules: "/s/k/modules", Version: "6.1.0-28-amd64", Digest: "sha256:ab", Managed: true,
		OriginKind: OriginImport, OriginRef: "/tmp/linux.deb", CreatedAt: now}
	if err := s.PutKernel(ctx, k); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKernel(ctx, "debian-6.1")
	if err != nil || !reflect.DeepEqual(got, k) {
		t.Fatalf("GetKernel = %+v, %v; want %+v", got, err, k)
	}
	im := Image{ID: "i1", Name: "deb", Managed: false, RootfsPath: "/home/u/rootfs.ext4", KernelRef: "debian-6.1",
		SizeBytes: 1 << 30, OriginKind: OriginRegister, CreatedAt: now}
	if err := s.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	gotIm, err := s.GetImage(ctx, "deb")
	if err != nil || !reflect.DeepEqual(gotIm, im) {
		t.Fatalf("GetImage = %+v, %v; want %+v", gotIm, err, im)
	}
	if byID, err := s.GetImageByID(ctx, "i1"); err != nil || byID.Name != "deb" {
		t.Fatalf("GetImageByID = %+v, %v", byID, err)
	}
	if byID, err := s.GetKernelByID(ctx, "k1"); err != nil || byID.Name != "debian-6.1" {
		t.Fatalf("GetKernelByID = %+v, %v", byID, err)
	}
	if _, err := s.GetKernelByID(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetKernelByID unknown = %v", err)
	}
	// A second row with the same name is refused.
	dup := im
	dup.ID = "i2"
	if err := s.PutImage(ctx, dup); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name = %v, want ErrExists", err)
	}
	// A VM that uses both keeps them from being deleted, and is named.
	ts := formatTime(now)
	for _, name := range []string{"vm-b", "vm-a"} {
		if _, err := s.db.Exec(`INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, created_at, updated_at)
			VALUES (?, ?, 'i1', 'k1', 1, 1, 1, ?, ?)`, "id-"+name, name, ts, ts); err != nil {
			t.Fatal(err)
		}
	}
	err = s.DeleteImage(ctx, "deb")
	var inUse *InUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), "vm-a, vm-b") {
		t.Fatalf("DeleteImage in use = %v, want InUseError naming vm-a, vm-b", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); !errors.As(err, &inUse) {
		t.Fatalf("DeleteKernel in use = %v", err)
	}
	if _, err := s.db.Exec(`DELETE FROM vms`); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, "deb"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetImage(ctx, "deb"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetImage after delete = %v", err)
	}
	if err := s.DeleteKernel(ctx, "debian-6.1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteKernel twice = %v", err)
	}
	ks, _ := s.ListKernels(ctx)
	ims, _ := s.ListImages(ctx)
	if len(ks) != 0 || len(ims) != 0 {
		t.Fatalf("left rows: %v %v", ks, ims)
	}
}
