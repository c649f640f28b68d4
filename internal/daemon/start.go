package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/plan"
	"banger/internal/daemon/sshkey"
	"banger/internal/daemon/vmm"
	"banger/internal/guest/boot"
	"banger/internal/store"
)

// The steps of a VM's start, in order. Each has its undo; a failed or
// cancelled start undoes the steps it began in reverse, and stopping a VM
// (Stop, its VMM exiting on its own, reconcile) runs the same undos.
const (
	stepRunDir  = "prepare the run dir"
	stepRecord  = "record the start"
	stepRoot    = "set up the root device"
	stepNetwork = "attach the network"
	stepVMM     = "start the VMM"
	stepPID     = "record the VMM's pid"
	stepReady   = "wait until the guest is ready"
)

// startRun is one start of a VM: what it starts from and what its steps
// made, which their undos take back.
type startRun struct {
	v      store.VM
	dir    string     // the run dir
	drv    vmm.Driver // nil when the VM's VMM is unknown
	reason string
	// emulate: the host probe found no usable KVM.
	emulate bool
	k       store.Kernel
	im      store.Image
	sshKey  string
	p       imagemgr.Progress

	recorded bool          // the store says starting: a failure is recorded
	params   []string      // kernel parameters that are not the agent's
	guest    boot.Settings // the agent's, encoded by boot.Settings.Cmdline
	root     string
	att      netmgr.Attachment
	m        vmm.Machine
	launch   vmm.Launch
	// restore, for a VM made from a snapshot whose first start this is:
	// the VMM resumes the saved guest instead of booting it.
	restore *vmm.Restore
}

// Start boots a created or stopped VM and waits until its agent is ready.
func (vm *vmManager) Start(ctx context.Context, name, vmmOverride string, p imagemgr.Progress) (store.VM, error) {
	v, unlock, err := vm.lockVM(ctx, name)
	if err != nil {
		return store.VM{}, err
	}
	defer unlock()
	return vm.startLocked(ctx, v, vmmOverride, p)
}

// lockVM takes the lock of the VM called name and returns its row as read
// under that lock. A row read before the lock is stale once a start, stop
// or remove held it meanwhile: a stop acting on the row it read before a
// start recorded its run dir released nothing of that start (its run dir
// stayed), and the name may even be another VM's by then.
func (vm *vmManager) lockVM(ctx context.Context, name string) (store.VM, func(), error) {
	for {
		v, err := vm.st.GetVM(ctx, name)
		if err != nil {
			return store.VM{}, nil, err
		}
		// A caller that goes away while another operation holds the VM
		// (a start waiting out a slow boot) stops waiting.
		unlock, err := vm.locks.Lock(ctx, v.ID)
		if err != nil {
			return store.VM{}, nil, err
		}
		cur, err := vm.st.GetVM(ctx, name)
		if err == nil && cur.ID == v.ID {
			return cur, unlock, nil
		}
		unlock()
		if err != nil {
			return store.VM{}, nil, err
		}
		// Removed and made again under the same name meanwhile: lock that one.
	}
}

// startLocked is Start for a VM whose lock the caller holds, with its row
// read under that lock.
func (vm *vmManager) startLocked(ctx context.Context, v store.VM, vmmOverride string, p imagemgr.Progress) (store.VM, error) {
	if vm.isLive(v.ID) {
		return store.VM{}, inputf("VM %q is already %s", v.Name, v.State)
	}
	r, err := vm.newStartRun(ctx, v, vmmOverride, p)
	if err != nil {
		return store.VM{}, err
	}
	waitStart := time.Now()
	steps := vm.startSteps(r)
	if err := plan.Run(ctx, steps, nil); err != nil {
		return vm.failStart(ctx, r, err)
	}
	v = r.v
	v.State, v.StartedAt, v.UpdatedAt = store.VMRunning, time.Now().UTC(), time.Now().UTC()
	// The guest is up: a caller gone now does not undo the start, but a
	// store that cannot say so does, or the VM would stay "starting" with
	// a VMM nobody watches.
	if err := vm.st.PutVM(context.WithoutCancel(ctx), v); err != nil {
		plan.Undo(ctx, steps)
		return vm.failStart(ctx, r, &plan.StepError{Step: "record the VM running", Err: err})
	}
	vm.hostsChanged(ctx)
	go vm.watch(v.ID, v.Name, r.m)
	vm.log.Debug("VM running", "vm", v.Name, "vmm", r.drv.Name(), "start", time.Since(waitStart).Round(time.Millisecond))
	return v, nil
}

// newStartRun gathers what a start needs before it changes anything: the
// VMM, the kernel, the image, the user's SSH key.
func (vm *vmManager) newStartRun(ctx context.Context, v store.VM, vmmOverride string, p imagemgr.Progress) (*startRun, error) {
	// The request, not the last start's answer: a VM made with auto
	// chooses again at each start (the host may have changed).
	want := v.VMMRequested
	if vmmOverride != "" {
		want = vmmOverride
	}
	restore, err := vm.restoreOf(ctx, v, want)
	if err != nil {
		return nil, err
	}
	host := vm.host()
	drv, reason, err := chooseVMM(want, host, vm.drivers)
	if err != nil {
		return nil, vmInputError{err}
	}
	k, err := vm.st.GetKernelByID(ctx, v.KernelID)
	if err != nil {
		return nil, fmt.Errorf("kernel of VM %q: %w", v.Name, err)
	}
	im, err := vm.st.GetImageByID(ctx, v.ImageID)
	if err != nil {
		return nil, fmt.Errorf("image of VM %q: %w", v.Name, err)
	}
	pub, err := sshkey.Ensure(vm.cfg.SSHKeyPath)
	if err != nil {
		return nil, err
	}
	return &startRun{v: v, dir: vm.runDir(v.ID), drv: drv, reason: reason, emulate: !host.KVM.Usable(),
		k: k, im: im, sshKey: pub, p: p, restore: restore}, nil
}

// release takes back everything a start of v made, by the start's own
// undos: the live entry, the network, the root snapshot and the run dir.
// Its caller has stopped the VMM, or seen it exit, or found it gone: a
// VMM that outlived its stop is not waited for again here, and the next
// start kills it as a stray.
func (vm *vmManager) release(ctx context.Context, v store.VM) {
	d, _ := vm.drivers.Get(v.VMMKind)
	plan.Undo(ctx, vm.startSteps(&startRun{v: v, dir: v.RunDir, drv: d, recorded: true}))
}

// startSteps are the steps of r's start with their undos.
func (vm *vmManager) startSteps(r *startRun) []plan.Step {
	return []plan.Step{
		{Name: stepRunDir, Do: func(context.Context) error { return vm.prepareRunDir(r) },
			Undo: func(context.Context) { vm.removeRunDir(r.v.Name, r.dir) }},
		{Name: stepRecord, Do: func(ctx context.Context) error { return vm.recordStart(ctx, r) }},
		{Name: stepRoot, Do: func(ctx context.Context) (err error) {
			r.root, err = vm.rootDevice(ctx, r.v, r.im)
			return err
		}, Undo: func(ctx context.Context) { vm.releaseRoot(ctx, r.v) }},
		{Name: stepNetwork, Do: func(ctx context.Context) error { return vm.attachNetwork(ctx, r) },
			Undo: func(ctx context.Context) { vm.releaseNetwork(ctx, r.v) }},
		{Name: stepVMM, Do: func(ctx context.Context) error { return vm.startVMM(ctx, r) },
			Undo: func(ctx context.Context) { vm.stopVMM(ctx, r) }},
		{Name: stepPID, Do: func(ctx context.Context) error { return vm.recordPID(ctx, r) },
			Undo: func(context.Context) { vm.dropLive(r.v.ID) }},
		{Name: stepReady, Do: func(ctx context.Context) error { return vm.waitStarted(ctx, r) }},
	}
}

// prepareRunDir makes an empty run dir. A VMM of this VM that should have
// exited but did not (stuck in its teardown) still has the disk open: a
// second one beside it would corrupt it, so it is killed first.
func (vm *vmManager) prepareRunDir(r *startRun) error {
	if n := killStrays(r.dir, vm.drivers); n > 0 {
		vm.log.Warn("killed a VMM of this VM that was still running", "vm", r.v.Name, "count", n)
	}
	_ = os.RemoveAll(r.dir)
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("make the run dir of VM %s: %w", r.v.Name, err)
	}
	return nil
}

// removeRunDir removes a VM's run dir and what its VMM keeps outside it.
func (vm *vmManager) removeRunDir(name, dir string) {
	if dir == "" {
		return
	}
	for _, d := range vm.drivers {
		d.Cleanup(dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		vm.log.Warn("remove the run dir", "vm", name, "dir", dir, "error", err)
	}
}

// recordStart picks the network and records the VM as starting.
func (vm *vmManager) recordStart(ctx context.Context, r *startRun) error {
	netMode, err := vm.net.mode(ctx)
	if err != nil {
		return vmInputError{err}
	}
	vm.recording.Lock()
	defer vm.recording.Unlock()
	if err := vm.checkPortsFree(ctx, r.v); err != nil {
		return err
	}
	v := &r.v
	v.State, v.VMMKind, v.VMMReason, v.RunDir, v.LastError = store.VMStarting, r.drv.Name(), r.reason, r.dir, ""
	v.Network, v.IP, v.Tap, v.MAC = netMode, "", "", ""
	v.UpdatedAt = time.Now().UTC()
	if err := vm.st.PutVM(ctx, *v); err != nil {
		return err
	}
	r.recorded = true
	r.params = []string{"root=/dev/vda", "rw", "panic=-1"}
	r.guest = boot.Defaults()
	r.guest.Hostname, r.guest.SSHKeys = v.Name, []string{r.sshKey}
	if r.im.OriginKind == store.OriginOCI {
		r.params = append(r.params, "init="+OCIInit)
	}
	return nil
}

// checkPortsFree refuses a start whose published host ports another VM
// with a VMM (running, starting or stopping) publishes too, before the
// start records anything. Without it the start failed late: under QEMU's
// user network when the VMM could not bind (a message naming neither VM),
// on the bridge when the helper found the port taken (naming the other
// VM by its id).
func (vm *vmManager) checkPortsFree(ctx context.Context, v store.VM) error {
	if len(v.Publish) == 0 {
		return nil
	}
	vms, err := vm.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	mine := map[uint16]bool{}
	for _, p := range v.Publish {
		mine[p.HostPort] = true
	}
	for _, o := range vms {
		if o.ID == v.ID || !active(o) {
			continue
		}
		for _, p := range o.Publish {
			if mine[p.HostPort] {
				return inputf("host port %d is published by VM %q, which is %s: stop it first, or publish another port (a VM's published ports are set at create)", p.HostPort, o.Name, o.State)
			}
		}
	}
	return nil
}

// attachNetwork puts a bridged VM on the bridge and tells the guest its
// address.
func (vm *vmManager) attachNetwork(ctx context.Context, r *startRun) error {
	if r.v.Network != netBridge {
		if !r.drv.UserNetwork() {
			r.p.Phase("no bridged network (network = user): this " + r.drv.Name() + " VM is reached through its agent only")
		}
		return nil
	}
	r.p.Phase("attaching to bridge " + vm.cfg.BridgeName)
	att, err := vm.net.attach(ctx, r.v)
	if err != nil {
		return err
	}
	r.guest.Addr, r.guest.Gateway, r.guest.DNS = att.IP, att.Gateway, att.DNS
	r.att = att
	r.v.IP, r.v.Tap, r.v.MAC = att.IP.Addr().String(), att.Tap, att.MAC.String()
	return nil
}

// startVMM starts the VM's VMM through its driver, as a VMM user of its
// own under a root bangerd.
func (vm *vmManager) startVMM(ctx context.Context, r *startRun) error {
	r.p.Phase(fmt.Sprintf("starting %s (%s)", r.drv.Name(), r.reason))
	cred, releaseUID, err := vm.users.credential(r.v.ID)
	if err != nil {
		return err
	}
	// From the VMM's start on, its process marks the uid as used.
	defer releaseUID()
	spec := vmm.Spec{ID: r.v.ID, Name: r.v.Name, RunDir: r.dir, Kernel: r.k.VmlinuxPath, Initrd: r.k.InitrdPath,
		Params: r.params, Guest: r.guest, VCPUs: r.v.VCPUs, MemoryMiB: int(r.v.MemoryBytes >> 20),
		Drives: append([]string{r.root}, vm.extraDisks(r.v)...), Emulate: r.emulate, Credential: cred, Log: vm.log,
		Net: vmm.Net{Tap: r.att.Tap, MAC: r.v.MAC}, Restore: r.restore}
	if r.att.Tap == "" {
		for _, pp := range r.v.Publish {
			spec.Net.Forwards = append(spec.Net.Forwards, vmm.Forward{HostPort: int(pp.HostPort), GuestPort: int(pp.GuestPort)})
		}
	}
	m, l, err := r.drv.Start(ctx, spec)
	r.launch = l
	for _, n := range l.Notes {
		r.reason += "; " + n
	}
	r.v.VMMReason = r.reason
	if err != nil {
		return err
	}
	r.m = m
	r.v.AgentSocket, r.v.APISocket, r.v.SSHPort = l.AgentSocket, l.APISocket, l.SSHPort
	return nil
}

// stopVMM stops a VMM that still runs, through its own escalation.
func (vm *vmManager) stopVMM(ctx context.Context, r *startRun) {
	if r.m == nil {
		return
	}
	select {
	case <-r.m.Done():
		return
	default:
	}
	if err := r.m.Stop(ctx, nil); err != nil {
		vm.log.Warn("stop the VMM", "vm", r.v.Name, "error", err)
	}
}

// recordPID records the VMM's process so a restarted daemon can find it.
func (vm *vmManager) recordPID(ctx context.Context, r *startRun) error {
	r.v.PID, r.v.PIDStartTime = r.m.PID(), r.m.StartTime()
	r.v.UpdatedAt = time.Now().UTC()
	if err := vm.st.PutVM(ctx, r.v); err != nil {
		return fmt.Errorf("record the VMM's pid: %w", err)
	}
	vm.setLive(r.v.ID, &liveVM{m: r.m})
	return nil
}

// waitStarted waits for the guest agent; a failure keeps the console's
// end and shows its last lines.
func (vm *vmManager) waitStarted(ctx context.Context, r *startRun) error {
	r.p.Phase("waiting for the guest agent")
	if err := vm.waitReady(ctx, r.m.Agent(), r.m, r.launch.BootTimeout()); err != nil {
		return fmt.Errorf("%w%s", err, vm.keepConsole(r.v.ID, r.drv.ConsoleLog(r.dir)))
	}
	if r.restore != nil {
		return vm.reidentify(ctx, r)
	}
	return nil
}

// failStart returns the error of a start whose steps have been undone,
// and records the VM failed with it once the start was recorded.
func (vm *vmManager) failStart(ctx context.Context, r *startRun, err error) (store.VM, error) {
	var se *plan.StepError
	if !r.recorded {
		if errors.As(err, &se) {
			err = se.Err
		}
		return store.VM{}, err
	}
	v := r.v
	v.State, v.LastError, v.PID, v.PIDStartTime = store.VMFailed, err.Error(), 0, 0
	v.UpdatedAt = time.Now().UTC()
	if perr := vm.st.PutVM(context.WithoutCancel(ctx), v); perr != nil {
		vm.log.Error("record failed start", "vm", v.Name, "error", perr)
	}
	return v, fmt.Errorf("start VM %s: %w", v.Name, err)
}
