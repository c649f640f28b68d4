package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"banger/internal/daemon/consolelog"
	"banger/internal/daemon/vmm"
	"banger/internal/store"
)

// watch keeps a running VM's logs bounded and records a VM whose VMM exits
// on its own (a poweroff inside the guest, a crash) as stopped. It returns
// when the VMM has exited or the manager shuts down.
func (vm *vmManager) watch(id, name string, m vmm.Machine) {
	consolelog.Keep(vm.bg, m.Done(), m.Logs(), consolelog.DefaultMax, consolelog.DefaultInterval, vm.log.With("vm", name))
	select {
	case <-m.Done():
	default:
		return // shutting down; the VM runs on and is re-adopted
	}
	unlock := vm.locks.MustLock(id)
	defer unlock()
	cur := vm.getLive(id)
	if cur == nil || cur.m != m {
		return // stopped through the manager, which recorded it
	}
	ctx := context.Background()
	v, err := vm.st.GetVM(ctx, name)
	if err != nil || v.ID != id {
		vm.dropLive(id)
		return
	}
	vm.release(ctx, v)
	if err := vm.recordStopped(ctx, v, ""); err != nil {
		vm.log.Warn("record a VM stopped on its own", "vm", name, "error", err)
	}
	vm.log.Info("VM stopped on its own", "vm", name)
}

// recordStopped records v stopped, with why when it is not empty.
func (vm *vmManager) recordStopped(ctx context.Context, v store.VM, why string) error {
	v.State, v.PID, v.PIDStartTime = store.VMStopped, 0, 0
	v.StoppedAt, v.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	if why != "" {
		v.LastError = why
	}
	return vm.st.PutVM(context.WithoutCancel(ctx), v)
}

// Stop shuts a running VM down: the agent powers the guest off, then the
// VMM's own escalation, each bounded.
func (vm *vmManager) Stop(ctx context.Context, name string) (store.VM, error) {
	v, unlock, err := vm.lockVM(ctx, name)
	if err != nil {
		return store.VM{}, err
	}
	defer unlock()
	return vm.stopLocked(ctx, v, false)
}

// stopLocked stops a VM whose lock the caller holds: gracefully (the agent's
// poweroff, then the VMM's escalation), or, with kill, by killing the VMM at
// once, for a VM whose disks are about to be deleted. Then the start's
// undos release what it held.
func (vm *vmManager) stopLocked(ctx context.Context, v store.VM, kill bool) (store.VM, error) {
	l := vm.getLive(v.ID)
	if l == nil {
		if v.State == store.VMRunning || v.State == store.VMStarting || v.State == store.VMStopping {
			v.State = store.VMStopped
		}
		return v, nil
	}
	v.State, v.UpdatedAt = store.VMStopping, time.Now().UTC()
	_ = vm.st.PutVM(ctx, v)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	graceful := func(c context.Context) error { return vmm.Client(l.m.Agent()).Shutdown(c) }
	if kill {
		// A done context makes the VMM skip its gentle steps and kill.
		cancel()
		graceful = nil
	}
	err := l.m.Stop(sctx, graceful)
	vm.release(ctx, v)
	v.State, v.PID, v.PIDStartTime = store.VMStopped, 0, 0
	v.StoppedAt, v.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	if err != nil {
		v.LastError = "stop: " + err.Error()
	}
	if perr := vm.st.PutVM(context.WithoutCancel(ctx), v); perr != nil {
		return v, perr
	}
	vm.hostsChanged(ctx)
	return v, err
}

// releaseNetwork gives back a bridged VM's tap, ports and lease.
func (vm *vmManager) releaseNetwork(ctx context.Context, v store.VM) {
	if v.Network != netBridge {
		return
	}
	if err := vm.net.detach(ctx, v.ID); err != nil {
		vm.log.Warn("detach network", "vm", v.Name, "error", err)
	}
}

// hostsChanged rewrites the NAME.banger block; a failure is logged, never
// fatal to the VM.
func (vm *vmManager) hostsChanged(ctx context.Context) {
	if err := vm.net.updateHosts(context.WithoutCancel(ctx)); err != nil {
		vm.log.Warn("update the hosts file", "file", vm.cfg.HostsFile, "error", err)
	}
}

// Remove stops a VM if needed and deletes it with its disks and files.
func (vm *vmManager) Remove(ctx context.Context, name string, force bool) error {
	v, unlock, err := vm.lockVM(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	began := time.Now()
	var stopped time.Duration
	if vm.isLive(v.ID) {
		if !force {
			return vmInputError{fmt.Errorf("VM %q is running: stop it first, or use rm -f", name)}
		}
		// Its disks are deleted with it, so nothing a clean guest shutdown
		// would flush survives: kill the VMM rather than wait for one.
		if _, err := vm.stopLocked(ctx, v, true); err != nil {
			vm.log.Warn("stop before remove", "vm", name, "error", err)
		}
		stopped = time.Since(began)
	}
	if v.RunDir != "" {
		_ = os.RemoveAll(v.RunDir)
	}
	if err := vm.ws.Remove(v.ID); err != nil {
		return fmt.Errorf("remove the files of VM %q: %w", name, err)
	}
	if err := vm.st.DeleteVM(ctx, name); err != nil {
		return err
	}
	vm.log.Debug("VM removed", "vm", name, "stop", stopped.Round(time.Millisecond), "total", time.Since(began).Round(time.Millisecond))
	return nil
}
