package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestVMRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	now := time.Date(2026, 11, 28, 9, 0, 0, 5, time.UTC)
	if err := s.PutKernel(ctx, Kernel{ID: "k", Name: "k", VmlinuxPath: "/v", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, Image{ID: "i", Name: "i", RootfsPath: "/r", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	v := VM{ID: "v1", Name: "web", ImageID: "i", KernelID: "k", VCPUs: 2, MemoryBytes: 1 << 30, DiskBytes: 8 << 30,
		State: VMRunning, PID: 4242, PIDStartTime: 1 << 40, APISocket: "/s/fc.sock", VMMKind: "qemu",
		IP: "10.200.0.2", MAC: "02:00:00:00:00:01", Tap: "bgtap0", COWKind: "copy", COWDevice: "/s/root.ext4",
		CreatedAt: now, UpdatedAt: now.Add(time.Second), StartedAt: now.Add(2 * time.Second), LastError: "",
		VMMReason: "no /dev/kvm", RunDir: "/run/x", SSHPort: 40022, AgentSocket: "/run/x/agent.sock"}
	if err := s.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "web")
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("GetVM = %+v, %v\nwant %+v", got, err, v)
	}
	v.State, v.PID, v.StoppedAt, v.LastError = VMStopped, 0, now.Add(time.Minute), "powered off"
	if err := s.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListVMs(ctx)
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], v) {
		t.Fatalf("ListVMs = %+v, %v", list, err)
	}
	dup := v
	dup.ID = "v2"
	if err := s.PutVM(ctx, dup); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name = %v", err)
	}
	bad := v
	bad.ID, bad.Name, bad.State = "v3", "bad", "dancing"
	if err := s.PutVM(ctx, bad); err == nil {
		t.Fatal("unknown state accepted")
	}
	if err := s.DeleteVM(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}
