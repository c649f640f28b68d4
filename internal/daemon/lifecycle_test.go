package daemon

import (
	"banger/internal/hostprobe"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/vmm/vmmtest"
	"banger/internal/store"
)

// fakeVM makes a manager whose only VMM is a fake driver, on a real store,
// with one created VM of that driver. No VM boots and no root is needed.
func fakeVM(t *testing.T) (*vmManager, *vmmtest.Driver, store.VM) {
	t.Helper()
	run, err := os.MkdirTemp("", "bgfk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	state := filepath.Join(t.TempDir(), "state")
	cfg := config.Config{StateDir: state, RuntimeDir: filepath.Join(run, "rt"), Network: netUser, VMM: vmmtest.Name,
		SSHKeyPath: filepath.Join(state, "ssh", "id_ed25519"), DefaultVCPUs: 2, DefaultMemory: 512 << 20,
		DefaultDiskSize: 1 << 30, COW: "copy", DefaultImageName: "img"}
	d := &vmmtest.Driver{}
	vm, v := newTestVM(t, cfg, vmmtest.Name, vmm.NewRegistry(d))
	t.Cleanup(func() {
		for _, m := range d.Running() {
			m.Exit()
		}
	})
	return vm, d, v
}

// released checks that nothing of a start is left: no run dir, no live
// entry, no VMM running, no VMM uid held.
func released(t *testing.T, vm *vmManager, d *vmmtest.Driver, v store.VM) {
	t.Helper()
	if fi, err := os.Stat(vm.runDir(v.ID)); err == nil {
		t.Errorf("run dir %s left (%v)", vm.runDir(v.ID), fi.Mode())
	}
	if vm.isLive(v.ID) {
		t.Error("the VM is still live in the manager")
	}
	if n := len(d.Running()); n != 0 {
		t.Errorf("%d fake VMMs still run", n)
	}
	vm.users.mu.Lock()
	defer vm.users.mu.Unlock()
	if len(vm.users.taken) != 0 {
		t.Errorf("VMM uids still held: %v", vm.users.taken)
	}
}

func stateOf(t *testing.T, vm *vmManager, name string) store.VM {
	t.Helper()
	got, err := vm.st.GetVM(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestChooseVMM(t *testing.T) {
	noFC := hostprobe.Binary{Err: errors.New("firecracker is not on PATH")}
	fc := hostprobe.Binary{Path: "/bin/fc"}
	kvm := hostprobe.KVM{State: hostprobe.KVMUsable, Reason: "/dev/kvm opens read-write"}
	noKVM := hostprobe.KVM{State: hostprobe.KVMAbsent, Reason: "/dev/kvm does not exist"}
	pvm := hostprobe.KVM{State: hostprobe.KVMPVM, Reason: "/dev/kvm comes from the kvm_pvm module"}
	reg := vmm.NewRegistry(&vmmtest.Driver{NameOf: vmm.Firecracker}, &vmmtest.Driver{NameOf: vmm.QEMU},
		&vmmtest.Driver{}, &vmmtest.Driver{NameOf: "broken", UsableErr: errors.New("it is broken")})
	for _, c := range []struct {
		want       string
		host       vmm.Host
		kind, says string
	}{
		{"auto", vmm.Host{Firecracker: fc, KVM: kvm}, vmm.Firecracker, "auto: /bin/fc is installed and /dev/kvm is usable"},
		{"", vmm.Host{Firecracker: noFC, KVM: kvm}, vmm.QEMU, "auto: firecracker is not on PATH"},
		{"auto", vmm.Host{Firecracker: fc, KVM: noKVM}, vmm.QEMU, "/dev/kvm does not exist (QEMU runs without it, under TCG"},
		{"auto", vmm.Host{Firecracker: fc, KVM: pvm}, vmm.QEMU, "kvm_pvm"},
		{"qemu", vmm.Host{KVM: noKVM}, vmm.QEMU, "asked for"},
		{"firecracker", vmm.Host{Firecracker: fc, KVM: kvm}, vmm.Firecracker, "asked for; /bin/fc with /dev/kvm"},
		{"firecracker", vmm.Host{Firecracker: fc, KVM: noKVM}, "", "use vmm = \"qemu\""},
		{"firecracker", vmm.Host{Firecracker: fc, KVM: pvm}, "", "kvm_pvm"},
		{"firecracker", vmm.Host{Firecracker: noFC, KVM: kvm}, "", "vmm is firecracker but firecracker is not on PATH"},
		{"bochs", vmm.Host{}, "", "unknown vmm \"bochs\""},
		{vmmtest.Name, vmm.Host{}, vmmtest.Name, "asked for; the fake VMM"},
		{"broken", vmm.Host{}, "", "vmm is broken but it is broken"},
	} {
		d, why, err := chooseVMM(c.want, c.host, reg)
		got := why
		if err != nil {
			got = err.Error()
		}
		if (c.kind == "") != (err != nil) || (d != nil && d.Name() != c.kind) || !strings.Contains(got, c.says) {
			t.Errorf("chooseVMM(%q, %+v) = %v, %q, %v; want %q saying %q", c.want, c.host, d, why, err, c.kind, c.says)
		}
	}
}

func TestValidate(t *testing.T) {
	vm, _, _ := fakeVM(t)
	r := CreateRequest{Publish: []string{"8080:80"}}
	if err := vm.validate(&r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Name, "vm-") || r.Image != "img" || r.VCPUs != 2 || r.Memory != 512<<20 || r.Disk != 1<<30 || r.VMM != vmmtest.Name || r.COW != "copy" || len(r.publish) != 1 {
		t.Errorf("defaults not filled: %+v", r)
	}
	for _, c := range []struct {
		r    CreateRequest
		says string
	}{
		{CreateRequest{VCPUs: config.MaxVCPUs + 1}, "outside 1 to 64"},
		{CreateRequest{VCPUs: -1}, "outside 1 to 64"},
		{CreateRequest{Memory: config.MinMemory - 1}, "below 128MiB"},
		{CreateRequest{Disk: -1}, "--disk -1 is negative"},
		{CreateRequest{VMM: "qemu"}, "unknown vmm \"qemu\": use auto or fake"},
		{CreateRequest{Name: "../x"}, "VM"},
		{CreateRequest{Publish: []string{"nope"}}, "nope"},
	} {
		err := vm.validate(&c.r)
		var in vmInputError
		if !errors.As(err, &in) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("validate(%+v) = %v, want an input error saying %q", c.r, err, c.says)
		}
	}
	r = CreateRequest{VMM: "auto", VCPUs: config.MaxVCPUs, Memory: config.MinMemory}
	if err := vm.validate(&r); err != nil {
		t.Errorf("the bounds themselves are refused: %v", err)
	}
}

func TestCreate(t *testing.T) {
	vm, _, old := fakeVM(t)
	ctx := context.Background()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 is not installed (e2fsprogs): no image to create from")
	}
	im, _ := vm.st.GetImageByID(ctx, old.ImageID)
	im.RootfsPath = filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", im.RootfsPath, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := vm.st.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	v, err := vm.Create(ctx, CreateRequest{Name: "made", Image: "img"}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if v.State != store.VMCreated || v.COWKind != "copy" || v.VMMRequested != vmmtest.Name || v.VMMKind != "" || stateOf(t, vm, "made").ID != v.ID {
		t.Errorf("created %+v", v)
	}
	if fi, err := os.Stat(v.COWDevice); err != nil || fi.Size() != 1<<30 {
		t.Errorf("root disk %s: %v", v.COWDevice, err)
	}
	if _, err := vm.Create(ctx, CreateRequest{Name: old.Name}, noProgress{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("create over an existing name: %v", err)
	}
	ids, _ := vm.ws.List()
	if _, err := vm.Create(ctx, CreateRequest{Name: "nope", Image: "missing"}, noProgress{}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("create from a missing image: %v", err)
	}
	if after, _ := vm.ws.List(); len(after) != len(ids) {
		t.Errorf("a refused create left a VM dir: %d dirs, had %d", len(after), len(ids))
	}
}

func TestStartAndStopGracefully(t *testing.T) {
	vm, d, v := fakeVM(t)
	ctx := context.Background()
	got, err := vm.Start(ctx, v.Name, "", noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.VMRunning || got.PID == 0 || !strings.Contains(got.VMMReason, "fake note") || got.AgentSocket == "" {
		t.Errorf("started VM recorded as %+v", got)
	}
	spec := d.Specs()[0]
	if spec.RunDir != vm.runDir(v.ID) || spec.Drives[0] != v.COWDevice || spec.Guest.Hostname != v.Name || !strings.Contains(spec.KernelArgs(spec.Guest), "banger.hostname="+v.Name) {
		t.Errorf("spec %+v", spec)
	}
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err == nil {
		t.Error("a second start of a running VM succeeded")
	}
	link, _, err := vm.Agent(ctx, v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := vmm.Client(link).Health(ctx); err != nil || !h.Ready {
		t.Fatalf("health through the manager's link: %+v, %v", h, err)
	}
	m := d.Running()[0]
	stopped, err := vm.Stop(ctx, v.Name)
	if err != nil || stopped.State != store.VMStopped || stateOf(t, vm, v.Name).State != store.VMStopped {
		t.Fatalf("stop: %+v, %v", stopped, err)
	}
	if m.StoppedBy() != vmmtest.StoppedGraceful {
		t.Errorf("the VMM ended by %q, want the guest's poweroff", m.StoppedBy())
	}
	released(t, vm, d, v)
}

func TestStopEscalatesWhenTheGuestIgnoresPowerOff(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.IgnorePowerOff = true
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	m := d.Running()[0]
	if _, err := vm.Stop(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	if n, cerr := m.Stops(); m.StoppedBy() != vmmtest.StoppedKill || n != 1 || cerr != nil {
		t.Errorf("ended by %q after %d stops (context %v), want the escalation's kill after one graceful stop", m.StoppedBy(), n, cerr)
	}
	released(t, vm, d, v)
}

func TestRemoveForceKillsAtOnce(t *testing.T) {
	vm, d, v := fakeVM(t)
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	m := d.Running()[0]
	if err := vm.Remove(ctx, v.Name, false); err == nil {
		t.Fatal("remove of a running VM without force succeeded")
	}
	if err := vm.Remove(ctx, v.Name, true); err != nil {
		t.Fatal(err)
	}
	if _, cerr := m.Stops(); m.StoppedBy() != vmmtest.StoppedKill || cerr == nil {
		t.Errorf("ended by %q with context error %v, want killed with a done context", m.StoppedBy(), cerr)
	}
	if _, err := vm.st.GetVM(ctx, v.Name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the VM's row is still there: %v", err)
	}
	if _, err := os.Stat(vm.ws.Dir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the VM's dir is still there: %v", err)
	}
	released(t, vm, d, v)
}

func TestWatcherSeesTheVMMExit(t *testing.T) {
	vm, d, v := fakeVM(t)
	if _, err := vm.Start(context.Background(), v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	d.Running()[0].Exit()
	deadline := time.Now().Add(10 * time.Second)
	for vm.isLive(v.ID) || stateOf(t, vm, v.Name).State != store.VMStopped {
		if time.Now().After(deadline) {
			t.Fatalf("VM %q and live %v 10 s after its VMM exited", stateOf(t, vm, v.Name).State, vm.isLive(v.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The lock is taken by the watcher until it has released everything.
	unlock := vm.locks.MustLock(v.ID)
	unlock()
	released(t, vm, d, v)
}

// failedAt checks a start that failed at step: the error names it, the VM
// is recorded failed with it (or, before the start was recorded, left as
// it was), and nothing is left.
func failedAt(t *testing.T, vm *vmManager, d *vmmtest.Driver, v store.VM, err error, step string, recorded bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("start succeeded, want a failure at %q", step)
	}
	got := stateOf(t, vm, v.Name)
	if recorded {
		if !strings.Contains(err.Error(), step) || got.State != store.VMFailed || !strings.Contains(got.LastError, step) || got.PID != 0 {
			t.Errorf("error %q; VM %q pid %d last error %q; want failed at %q", err, got.State, got.PID, got.LastError, step)
		}
	} else if got.State != v.State || got.RunDir != "" {
		t.Errorf("a start refused before it was recorded changed the VM: %q run dir %q (error %v)", got.State, got.RunDir, err)
	}
	released(t, vm, d, v)
}

func TestStartFailsAtEachStep(t *testing.T) {
	t.Run("run dir", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		// The run dir's parent is a file.
		if err := os.WriteFile(filepath.Join(vm.cfg.RuntimeDir, "vms"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
		failedAt(t, vm, d, v, err, "run dir", false)
	})
	t.Run("record", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		vm.net.cfgMode = netBridge
		vm.priv = newPrivileged(filepath.Join(t.TempDir(), "no-helper.sock"), vm.cfg.StateDir)
		vm.net.priv = vm.priv
		if os.Geteuid() == 0 {
			t.Skip("a root bangerd reaches root in-process: network = bridge cannot be refused without touching the host")
		}
		_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
		failedAt(t, vm, d, v, err, "bridge", false)
		if _, err := vm.Start(context.Background(), v.Name, "", noProgress{}); !errors.As(err, new(vmInputError)) {
			t.Errorf("a refused network is not an input error: %v", err)
		}
	})
	t.Run("root device", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		// A dmsnap VM whose image's rootfs is gone: the snapshot's check
		// refuses it before anything reaches root.
		v.COWKind = "dmsnap"
		if err := vm.st.PutVM(context.Background(), v); err != nil {
			t.Fatal(err)
		}
		im, _ := vm.st.GetImageByID(context.Background(), v.ImageID)
		os.Remove(im.RootfsPath)
		_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
		failedAt(t, vm, d, v, err, stepRoot, true)
	})
	t.Run("vmm", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		d.StartErr = errors.New("no such VMM today")
		_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
		failedAt(t, vm, d, v, err, stepVMM, true)
		if got := stateOf(t, vm, v.Name); !strings.Contains(got.VMMReason, "fake note") {
			t.Errorf("the driver's note is lost from the reason of a failed start: %q", got.VMMReason)
		}
	})
	t.Run("ready", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		d.ExitAtBoot = true
		_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
		failedAt(t, vm, d, v, err, stepReady, true)
		if !strings.Contains(err.Error(), "the VMM exited") || !strings.Contains(err.Error(), "fake console of "+v.Name) {
			t.Errorf("the error lacks the exit or the console's end: %v", err)
		}
	})
}

func TestCancelDuringStart(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		d.NotReady = true
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		_, err := vm.Start(ctx, v.Name, "", noProgress{})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("start cancelled while waiting: %v", err)
		}
		failedAt(t, vm, d, v, err, stepReady, true)
	})
	t.Run("in the VMM step", func(t *testing.T) {
		vm, d, v := fakeVM(t)
		ctx, cancel := context.WithCancel(context.Background())
		d.OnStart = func(vmm.Spec) { cancel() }
		_, err := vm.Start(ctx, v.Name, "", noProgress{})
		// The fake refuses to start with a done context, as the real ones
		// do; the VMM step fails.
		failedAt(t, vm, d, v, err, stepVMM, true)
	})
}

func TestReconcile(t *testing.T) {
	vm, d, v := fakeVM(t)
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	// Three more VMs: one whose VMM died with the daemon, one caught
	// starting, and a run dir nobody owns.
	dead := putRow(t, vm, "dead", store.VMRunning, 424242)
	if err := os.MkdirAll(dead.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mid := putRow(t, vm, "midstart", store.VMStarting, 0)
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err == nil {
		t.Fatal("started twice")
	}
	// Its VMM runs: the fake started it under the other run.
	midVMM, _, err := d.Start(ctx, vmm.Spec{Name: mid.Name, RunDir: mkdir(t, mid.RunDir)})
	if err != nil {
		t.Fatal(err)
	}
	mid.PID, mid.PIDStartTime = midVMM.PID(), midVMM.StartTime()
	if err := vm.st.PutVM(ctx, mid); err != nil {
		t.Fatal(err)
	}
	stray := mkdir(t, vm.runDir("00000000000000ff"))

	// The daemon restarts: the old manager goes (its VMs run on) and a
	// new one on the same store reconciles.
	vm.Shutdown()
	vm2 := newVMManager(vm.cfg, vm.st, vm.images, vm.log)
	vm2.drivers, vm2.host = vm.drivers, vm.host
	defer vm2.Shutdown()
	if err := vm2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !vm2.isLive(v.ID) || stateOf(t, vm2, v.Name).State != store.VMRunning {
		t.Errorf("the running VM was not adopted: live %v, %q", vm2.isLive(v.ID), stateOf(t, vm2, v.Name).State)
	}
	if link, _, err := vm2.Agent(ctx, v.Name); err != nil {
		t.Error(err)
	} else if h, err := vmm.Client(link).Health(ctx); err != nil || !h.Ready {
		t.Errorf("the adopted VM's agent: %+v, %v", h, err)
	}
	if got := stateOf(t, vm2, dead.Name); got.State != store.VMStopped || !strings.Contains(got.LastError, "gone") || got.PID != 0 {
		t.Errorf("dead VM recorded %q %q pid %d, want stopped", got.State, got.LastError, got.PID)
	}
	if got := stateOf(t, vm2, mid.Name); got.State != store.VMFailed || !strings.Contains(got.LastError, "while the VM was starting") {
		t.Errorf("VM caught starting recorded %q %q, want failed", got.State, got.LastError)
	}
	if _, cerr := midVMM.(*vmmtest.Machine).Stops(); midVMM.(*vmmtest.Machine).StoppedBy() != vmmtest.StoppedKill || cerr == nil {
		t.Errorf("the VMM of the VM caught starting was not killed at once")
	}
	for _, dir := range []string{dead.RunDir, mid.RunDir, stray} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run dir %s left (%v)", dir, err)
		}
	}
	if _, err := vm2.Stop(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	released(t, vm2, d, v)
}

// putRow records a VM with state and pid, whose run dir is where this
// manager keeps it.
func putRow(t *testing.T, vm *vmManager, name, state string, pid int) store.VM {
	t.Helper()
	now := time.Now().UTC()
	id := newVMID()
	v := store.VM{ID: id, Name: name, ImageID: "i1", KernelID: "k1", VCPUs: 1, MemoryBytes: 256 << 20, DiskBytes: 1 << 20, State: state,
		VMMRequested: vmmtest.Name, VMMKind: vmmtest.Name, COWKind: "copy", RunDir: vm.runDir(id), PID: pid, PIDStartTime: 1, CreatedAt: now, UpdatedAt: now}
	if err := vm.st.PutVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.ws.Create(id); err != nil {
		t.Fatal(err)
	}
	if err := vm.ws.Commit(id); err != nil {
		t.Fatal(err)
	}
	return v
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAutoSurvivesTheFirstBoot: a VM made with vmm = auto keeps asking for
// auto; each start chooses again from the host as it is then.
func TestAutoSurvivesTheFirstBoot(t *testing.T) {
	vm, _, v := fakeVM(t)
	fcFake, qemuFake := &vmmtest.Driver{NameOf: vmm.Firecracker}, &vmmtest.Driver{NameOf: vmm.QEMU}
	t.Cleanup(func() {
		for _, m := range append(fcFake.Running(), qemuFake.Running()...) {
			m.Exit()
		}
	})
	vm.drivers[vmm.Firecracker], vm.drivers[vmm.QEMU] = fcFake, qemuFake
	ctx := context.Background()
	v.VMMRequested = "auto"
	if err := vm.st.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	noKVM := vmm.Host{Firecracker: hostprobe.Binary{Path: "/bin/fc"},
		KVM: hostprobe.KVM{State: hostprobe.KVMPVM, Reason: "/dev/kvm comes from the kvm_pvm module"}}
	vm.host = func() vmm.Host { return noKVM }
	got, err := vm.Start(ctx, v.Name, "", noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if got.VMMKind != vmm.QEMU || got.VMMRequested != "auto" || !strings.Contains(got.VMMReason, "kvm_pvm") {
		t.Fatalf("first start: vmm %q asked %q (%s)", got.VMMKind, got.VMMRequested, got.VMMReason)
	}
	if _, err := vm.Stop(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	// The host gains KVM: the same VM now gets Firecracker.
	withKVM := noKVM
	withKVM.KVM = hostprobe.KVM{State: hostprobe.KVMUsable, Reason: "/dev/kvm opens read-write"}
	vm.host = func() vmm.Host { return withKVM }
	got, err = vm.Start(ctx, v.Name, "", noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	stored := stateOf(t, vm, v.Name)
	if got.VMMKind != vmm.Firecracker || stored.VMMKind != vmm.Firecracker || stored.VMMRequested != "auto" {
		t.Fatalf("second start: vmm %q, stored %q asked %q", got.VMMKind, stored.VMMKind, stored.VMMRequested)
	}
	if _, err := vm.Stop(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
}
