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

func TestVMPortsAndRequestedVMM(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	if err := s.PutKernel(ctx, Kernel{ID: "k", Name: "k", VmlinuxPath: "/v", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, Image{ID: "i", Name: "i", RootfsPath: "/r", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	v := VM{ID: "v1", Name: "web", ImageID: "i", KernelID: "k", VCPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30,
		VMMRequested: "auto", CreatedAt: now,
		Publish: []PortMap{{HostPort: 9090, GuestPort: 90}, {HostPort: 8080, GuestPort: 80}}}
	if err := s.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	// A start resolves the VMM; the request stays.
	v.VMMKind = "qemu"
	if err := s.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "web")
	want := []PortMap{{HostPort: 8080, GuestPort: 80}, {HostPort: 9090, GuestPort: 90}} // host port order
	if err != nil || got.VMMRequested != "auto" || got.VMMKind != "qemu" || !reflect.DeepEqual(got.Publish, want) {
		t.Fatalf("GetVM = %+v, %v", got, err)
	}
	list, err := s.ListVMs(ctx)
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0].Publish, want) {
		t.Fatalf("ListVMs = %+v, %v", list, err)
	}

	// Bad ports and requests are refused and change nothing.
	for _, bad := range []VM{
		func() VM { b := got; b.Publish = []PortMap{{HostPort: 0, GuestPort: 80}}; return b }(),
		func() VM { b := got; b.Publish = []PortMap{{HostPort: 1, GuestPort: 0}}; return b }(),
		func() VM {
			b := got
			b.Publish = []PortMap{{HostPort: 1, GuestPort: 2}, {HostPort: 1, GuestPort: 3}}
			return b
		}(),
	} {
		if err := s.PutVM(ctx, bad); err == nil {
			t.Errorf("PutVM(%+v) accepted", bad)
		}
	}
	if again, err := s.GetVM(ctx, "web"); err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("after refused writes: %+v, %v; want %+v", again, err, got)
	}

	// Ports go with their VM.
	if err := s.DeleteVM(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM vm_ports`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("ports left after delete: %d, %v", n, err)
	}
}

func TestMigrationSplitsPublishText(t *testing.T) {
	ctx := context.Background()
	all := allMigrations(t)
	path := filepath.Join(t.TempDir(), "banger.db")
	old := openTest(t, path, all[:5])
	insertCore(t, old, "p")
	if _, err := old.db.Exec(`UPDATE vms SET publish = '8080:80, 2222:22,bad,70000:1', vmm_kind = 'auto' WHERE id = 'vm-p'`); err != nil {
		t.Fatal(err)
	}
	insertCore(t, old, "q")
	if _, err := old.db.Exec(`UPDATE vms SET vmm_kind = 'firecracker' WHERE id = 'vm-q'`); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.GetVM(ctx, "vmp")
	want := []PortMap{{HostPort: 2222, GuestPort: 22}, {HostPort: 8080, GuestPort: 80}}
	if err != nil || !reflect.DeepEqual(p.Publish, want) || p.VMMRequested != "auto" || p.VMMKind != "" {
		t.Fatalf("migrated VM p = %+v, %v", p, err)
	}
	q, err := s.GetVM(ctx, "vmq")
	if err != nil || len(q.Publish) != 0 || q.VMMRequested != "firecracker" || q.VMMKind != "firecracker" {
		t.Fatalf("migrated VM q = %+v, %v", q, err)
	}
}

// Hand-edited or garbage publish text of an older store: only whole
// HOSTPORT:GUESTPORT pairs of digits in range become ports, as the
// daemon's old reader (strconv.Atoi on each side) took them; a pair with
// trailing junk is dropped, never read as its numeric prefix.
func TestMigrationPublishGarbage(t *testing.T) {
	ctx := context.Background()
	all := allMigrations(t)
	path := filepath.Join(t.TempDir(), "banger.db")
	old := openTest(t, path, all[:5])
	insertCore(t, old, "g")
	if _, err := old.db.Exec(`UPDATE vms SET publish = '8080x:80,1e3:22,9000:90:tcp,5000:50.5, :1,3:,:,,0:0,65536:1,1:65536,99999999999999999999:1,65535:65535, 7000 : 70 ,7000:71,0x10:1' WHERE id = 'vm-g'`); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g, err := s.GetVM(ctx, "vmg")
	want := []PortMap{{HostPort: 7000, GuestPort: 70}, {HostPort: 65535, GuestPort: 65535}}
	if err != nil || !reflect.DeepEqual(g.Publish, want) {
		t.Fatalf("migrated ports = %v, %v; want %v", g.Publish, err, want)
	}
}
