package vmm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/daemon/vmm"
	"banger/internal/daemon/vmm/vmmtest"
)

func shapedSpec() vmm.Spec {
	return vmm.Spec{MemoryMiB: 512, VCPUs: 2, Drives: []string{"/r", "/d"}}
}

// Each mismatch is refused with its own reason; a fitting state passes.
func TestCheckRestore(t *testing.T) {
	spec := shapedSpec()
	good := vmm.State{VMM: "qemu", VMMVersion: "7.2.22", Emulated: true, Files: []string{"state"}}.WithShape(spec)
	if err := vmm.CheckRestore(good, spec, "qemu", "7.2.22"); err != nil {
		t.Fatalf("a fitting state: %v", err)
	}
	kvm := good
	kvm.Emulated = false
	if err := vmm.CheckRestore(kvm, spec, "qemu", "7.2.22"); err != nil {
		t.Errorf("a KVM state on a KVM host: %v", err)
	}
	emulating := spec
	emulating.Emulate = true
	if err := vmm.CheckRestore(good, emulating, "qemu", "7.2.22"); err != nil {
		t.Errorf("a TCG state on a host without KVM: %v", err)
	}
	tap := spec
	tap.Net.Tap = "tap0"
	for _, c := range []struct {
		name          string
		st            func(s *vmm.State)
		spec          vmm.Spec
		vmm, version  string
		field, reason string
	}{
		{"vmm", nil, spec, "firecracker", "7.2.22", "vmm", `its vmm is "qemu" but this VM would have "firecracker"`},
		{"version", nil, spec, "qemu", "8.0.0", "vmm version", "its vmm version is 7.2.22 but this VM would have 8.0.0"},
		{"no version", nil, spec, "qemu", "", "vmm version", "an unknown version"},
		{"memory", func(s *vmm.State) { s.MemoryMiB = 1024 }, spec, "qemu", "7.2.22", "memory size", "its memory size is 1024 MiB but this VM would have 512 MiB"},
		{"vcpus", func(s *vmm.State) { s.VCPUs = 1 }, spec, "qemu", "7.2.22", "vCPU count", "its vCPU count is 1 but this VM would have 2"},
		{"drives", func(s *vmm.State) { s.Drives = 1 }, spec, "qemu", "7.2.22", "disk count", "its disk count is 1 but this VM would have 2"},
		{"network", nil, tap, "qemu", "7.2.22", "network", "its network is user but this VM would have tap"},
		{"kvm state, no kvm", func(s *vmm.State) { s.Emulated = false }, emulating, "qemu", "7.2.22", "accelerator", "its accelerator is KVM"},
		{"no files", func(s *vmm.State) { s.Files = nil }, spec, "qemu", "7.2.22", "files", "incomplete"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := good
			st.Files = []string{"state"}
			if c.st != nil {
				c.st(&st)
			}
			err := vmm.CheckRestore(st, c.spec, c.vmm, c.version)
			var me *vmm.MismatchError
			if !errors.As(err, &me) || !errors.Is(err, vmm.ErrMismatch) {
				t.Fatalf("CheckRestore = %v, want a MismatchError", err)
			}
			if me.Field != c.field || !strings.Contains(err.Error(), c.reason) || me.Hint == "" {
				t.Errorf("CheckRestore = %q (field %q), want field %q and %q", err, me.Field, c.field, c.reason)
			}
		})
	}
}

// The fake driver saves and restores: a clone started from the state of a
// paused machine reports it, a mismatching restore is refused, and a
// save of a running machine is refused.
func TestFakeSnapshotFlow(t *testing.T) {
	ctx := context.Background()
	d := &vmmtest.Driver{}
	spec := shapedSpec()
	spec.Name, spec.RunDir = "parent", t.TempDir()
	m, l, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx, nil)
	if l.Restored {
		t.Error("a booted machine says it was restored")
	}
	s, ok := m.(vmm.Snapshotter)
	if !ok {
		t.Fatal("the fake machine is no Snapshotter")
	}
	dir := t.TempDir()
	if _, err := s.SaveState(ctx, dir); err == nil || !strings.Contains(err.Error(), "not paused") {
		t.Errorf("save of a running machine: %v", err)
	}
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.SaveState(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(ctx); err != nil || m.(*vmmtest.Machine).Paused() {
		t.Fatalf("resume: %v", err)
	}
	if st.VMM != vmmtest.Name || st.VMMVersion != vmmtest.DefaultVersion || len(st.Files) != 1 || st.Bytes <= 0 {
		t.Errorf("state %+v", st)
	}
	st = st.WithShape(spec)

	clone := spec
	clone.Name, clone.RunDir = "clone", t.TempDir()
	clone.Restore = &vmm.Restore{Dir: dir, State: st}
	cm, cl, err := d.Start(ctx, clone)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Stop(ctx, nil)
	if r := cm.(*vmmtest.Machine).Restored(); !cl.Restored || r == nil || r.VM != "parent" || r.Saves != 1 {
		t.Errorf("clone restored %+v (launch %v), want parent's first save", r, cl.Restored)
	}

	// A new VMM version refuses the old state.
	d2 := &vmmtest.Driver{Version: "fake-2"}
	clone.RunDir = t.TempDir()
	if _, _, err := d2.Start(ctx, clone); !errors.Is(err, vmm.ErrMismatch) {
		t.Errorf("restore across versions: %v", err)
	}
	// A missing state file is an error, not a boot.
	os.Remove(filepath.Join(dir, vmmtest.StateFile))
	clone.RunDir = t.TempDir()
	if _, _, err := d.Start(ctx, clone); err == nil || !strings.Contains(err.Error(), "load the saved state") {
		t.Errorf("restore of a missing state: %v", err)
	}
}
