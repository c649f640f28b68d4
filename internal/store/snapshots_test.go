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

// TestSnapshotRoundTripAndGuards saves, reads, lists and deletes a
// snapshot, and checks that the record keeps its image and kernel from
// being removed, and that a bad record is refused before it is written.
func TestSnapshotRoundTripAndGuards(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	if err := s.PutKernel(ctx, Kernel{ID: "k1", Name: "k", VmlinuxPath: "/k", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, Image{ID: "i1", Name: "img", RootfsPath: "/r", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	sn := Snapshot{ID: "s1", Name: "warm-1", VMID: "v1", VMName: "box", ImageID: "i1", KernelID: "k1",
		VMMKind: "qemu", VMMVersion: "7.2.19", AgentVersion: "v0.1.0", VCPUs: 2, MemoryBytes: 512 << 20,
		DiskBytes: 1 << 30, Dir: "/state/snapshots/s1", Files: []string{"state.qemu", "root.ext4"},
		SizeBytes: 300 << 20, State: SnapshotReady, Warm: true, CreatedAt: now}
	if err := s.PutSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, "warm-1")
	if err != nil || !reflect.DeepEqual(got, sn) {
		t.Fatalf("GetSnapshot = %+v, %v; want %+v", got, err, sn)
	}
	dup := sn
	dup.ID = "s2"
	if err := s.PutSnapshot(ctx, dup); !errors.Is(err, ErrExists) {
		t.Fatalf("a second snapshot of the same name = %v, want ErrExists", err)
	}
	for _, bad := range []func(*Snapshot){
		func(x *Snapshot) { x.Files = []string{"../etc/passwd"} },
		func(x *Snapshot) { x.Files = []string{"a/b"} },
		func(x *Snapshot) { x.State = "half" },
		func(x *Snapshot) { x.VMMKind = "" },
		func(x *Snapshot) { x.MemoryBytes = 0 },
	} {
		b := sn
		b.ID, b.Name = "bad", "bad"
		bad(&b)
		if err := s.PutSnapshot(ctx, b); err == nil {
			t.Errorf("PutSnapshot(%+v) was accepted", b)
		}
	}
	if _, err := s.GetSnapshot(ctx, "bad"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused snapshot was written: %v", err)
	}

	err = s.DeleteImage(ctx, "img")
	var inUse *InUseError
	if !errors.As(err, &inUse) || !reflect.DeepEqual(inUse.Snapshots, []string{"warm-1"}) ||
		!strings.Contains(err.Error(), "snapshot warm-1") || !strings.Contains(err.Error(), "banger snapshot rm") {
		t.Fatalf("DeleteImage under a snapshot = %v", err)
	}
	if err := s.DeleteKernel(ctx, "k"); !errors.As(err, &inUse) {
		t.Fatalf("DeleteKernel under a snapshot = %v", err)
	}

	// A VM made from it, not yet started, keeps it.
	ts := formatTime(now)
	if _, err := s.db.Exec(`INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, created_at, updated_at, restore_from)
		VALUES ('v9', 'clone', 'i1', 'k1', 1, 1, 1, ?, ?, 's1')`, ts, ts); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, "warm-1"); !errors.As(err, &inUse) || !reflect.DeepEqual(inUse.VMs, []string{"clone"}) {
		t.Fatalf("DeleteSnapshot under a clone not yet started = %v", err)
	}
	if err := s.DeleteSnapshotByID(ctx, "s1"); !errors.As(err, &inUse) || inUse.Name != "warm-1" {
		t.Fatalf("DeleteSnapshotByID under a clone not yet started = %v", err)
	}
	if err := s.DeleteSnapshotByID(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteSnapshotByID of an unknown id = %v", err)
	}
	if v, err := s.GetVM(ctx, "clone"); err != nil || v.RestoreFrom != "s1" {
		t.Fatalf("GetVM(clone) = %+v, %v", v, err)
	}
	if _, err := s.db.Exec(`DELETE FROM vms WHERE id = 'v9'`); err != nil {
		t.Fatal(err)
	}
	if byID, err := s.GetSnapshotByID(ctx, "s1"); err != nil || byID.Name != "warm-1" {
		t.Fatalf("GetSnapshotByID = %+v, %v", byID, err)
	}
	list, err := s.ListSnapshots(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "warm-1" {
		t.Fatalf("ListSnapshots = %+v, %v", list, err)
	}
	if err := s.DeleteSnapshot(ctx, "warm-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, "warm-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteSnapshot = %v", err)
	}
	if err := s.DeleteImage(ctx, "img"); err != nil {
		t.Fatalf("DeleteImage once the snapshot is gone = %v", err)
	}
}
