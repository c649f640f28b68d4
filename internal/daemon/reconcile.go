package daemon

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/store"
)

// active says whether the store has v as having a VMM (running, or caught
// starting or stopping).
func active(v store.VM) bool {
	return v.State == store.VMRunning || v.State == store.VMStarting || v.State == store.VMStopping
}

// Reconcile makes the store true after a daemon (re)start: VMM processes
// that still run are adopted, dead ones are recorded as stopped with the
// reason, and files no VM owns are removed.
func (vm *vmManager) Reconcile(ctx context.Context) error {
	vms, err := vm.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, v := range vms {
		known[v.ID] = true
		if err := vm.reconcileVM(ctx, v); err != nil {
			return err
		}
	}
	// Leftover snapshots of VMs that do not run (a crash between setup and
	// start, or a daemon killed with VMs stopping).
	vm.removeLeftoverSnapshots(ctx)
	// VM snapshots a daemon killed while saving left half-written.
	vm.removeUnfinishedSnapshots(ctx)
	vm.sweepVMDirs(known)
	runs, _ := os.ReadDir(filepath.Join(vm.cfg.RuntimeDir, "vms"))
	for _, e := range runs {
		if !known[e.Name()] {
			dir := filepath.Join(vm.cfg.RuntimeDir, "vms", e.Name())
			killStrays(dir, vm.drivers)
			_ = os.RemoveAll(dir)
		}
	}
	// Host-wide leftovers of VMMs no longer running: the chroots of jailed
	// Firecrackers that a host reboot emptied the run dirs of.
	for _, d := range vm.drivers {
		for _, left := range d.Sweep() {
			vm.log.Info("removed what a VMM no longer running left", "vmm", d.Name(), "path", left)
		}
	}
	return nil
}

// reconcileVM makes one VM's row true.
func (vm *vmManager) reconcileVM(ctx context.Context, v store.VM) error {
	if v.RunDir != "" && filepath.Clean(v.RunDir) != vm.runDir(v.ID) {
		// A row of another install (an adopted or copied store) or of
		// another runtime_dir: its run dir, VMM and network are not
		// this daemon's to kill or delete. Forget them.
		vm.log.Warn("a VM's run dir is not under this daemon's runtime dir: it and any VMM using it are left alone, and the VM is recorded as stopped",
			"vm", v.Name, "run_dir", v.RunDir, "runtime_dir", vm.cfg.RuntimeDir)
		if active(v) {
			v.State, v.LastError = store.VMStopped, "its run dir "+v.RunDir+" was not under this bangerd's runtime dir; any VMM still using it was left alone"
			v.StoppedAt = time.Now().UTC()
		}
		v.RunDir, v.PID, v.PIDStartTime, v.UpdatedAt = "", 0, 0, time.Now().UTC()
		return vm.st.PutVM(ctx, v)
	}
	if !active(v) {
		vm.removeRunDir(v.Name, v.RunDir)
		return nil
	}
	var m vmm.Machine
	if d, err := vm.drivers.Get(v.VMMKind); err == nil {
		m, _ = d.Adopt(vmm.Adoption{PID: v.PID, StartTime: v.PIDStartTime, RunDir: v.RunDir, AgentSocket: v.AgentSocket})
	}
	if m != nil && v.State == store.VMRunning {
		vm.setLive(v.ID, &liveVM{m: m})
		go vm.watch(v.ID, v.Name, m)
		vm.log.Info("re-adopted running VM", "vm", v.Name, "pid", v.PID)
		if v.Network == netBridge {
			// Its resolv.conf names the gateway: answer there again at
			// once, before anyone else can take the port.
			vm.net.resumeDNS(ctx)
		}
		return nil
	}
	if m != nil {
		// Caught mid-start or mid-stop: kill it at once (a cancelled
		// context skips the graceful steps), since the daemon does not
		// answer the CLI until reconciliation is done.
		kctx, kill := context.WithCancel(ctx)
		kill()
		_ = m.Stop(kctx, nil)
	}
	// A daemon killed between spawning the VMM and recording its pid
	// leaves a VMM nobody knows: find it by its run dir.
	if n := killStrays(v.RunDir, vm.drivers); n > 0 {
		vm.log.Warn("killed VMM processes left by a previous daemon", "vm", v.Name, "count", n)
	}
	if v.State == store.VMStarting {
		v.State, v.LastError = store.VMFailed, "bangerd stopped while the VM was starting"
	} else {
		v.State, v.LastError = store.VMStopped, "the VMM process was gone when bangerd started"
	}
	v.PID, v.PIDStartTime, v.UpdatedAt = 0, 0, time.Now().UTC()
	if v.StoppedAt.IsZero() || v.State == store.VMStopped {
		v.StoppedAt = time.Now().UTC()
	}
	if err := vm.st.PutVM(ctx, v); err != nil {
		return err
	}
	vm.release(ctx, v)
	vm.log.Warn("VM found not running at start", "vm", v.Name, "now", v.State)
	return nil
}

// sweepVMDirs deals with the VM directories the store has no row for. The
// trash of removals cut short is deleted, and so is the directory of a
// create cut short before its row was recorded (still marked
// uncommitted). Any other VM dir with no row (a VM the store has
// forgotten: a store restored from an older backup, or adopted) is moved
// aside, never deleted: the daemon cannot prove it is garbage.
func (vm *vmManager) sweepVMDirs(known map[string]bool) {
	if err := vm.ws.Sweep(); err != nil {
		vm.log.Warn("finding the directories of removed VMs to delete", "error", err)
	}
	ids, err := vm.ws.List()
	if err != nil {
		vm.log.Warn("list VM directories", "error", err)
	}
	for _, id := range ids {
		if known[id] {
			// A create killed between recording its row and Commit.
			if err := vm.ws.Commit(id); err != nil {
				vm.log.Warn("VM directory", "id", id, "error", err)
			}
			continue
		}
		if vm.ws.Uncommitted(id) {
			vm.log.Warn("removing the directory of a VM create cut short before its row was recorded", "id", id)
			if err := vm.ws.Remove(id); err != nil {
				vm.log.Warn("remove the directory of a VM create cut short", "id", id, "error", err)
			}
			continue
		}
		to, err := vm.ws.MoveAside(id, time.Now())
		if err != nil {
			vm.log.Error("a VM directory has no row in the store and could not be moved aside; it was left where it is", "id", id, "error", err)
			continue
		}
		vm.log.Warn("a VM directory has no row in the store: moved aside, not deleted (banger doctor says how to recover or delete it)", "id", id, "to", to)
	}
}
