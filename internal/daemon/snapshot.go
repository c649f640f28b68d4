package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/atomicfile"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/workspace"
	"banger/internal/guest/client"
	"banger/internal/store"
)

// SnapshotRequest asks for a snapshot of a running VM.
type SnapshotRequest struct {
	VM   string // the running VM to save
	Name string // the snapshot's name; "" picks <vm>-<time>
	Stop bool   // stop the VM after saving instead of resuming it
}

// The files of a snapshot's directory besides the VMM's own: the saved
// State, and the frozen disks (the root first, then the work disk).
const (
	snapStateFile = "state.json"
	snapRootDisk  = "root.ext4"
	snapWorkDisk  = "work.ext4"
)

// snapshotDir is where the snapshot with id keeps its files.
func (vm *vmManager) snapshotDir(id string) string {
	return filepath.Join(vm.cfg.StateDir, "snapshots", id)
}

// Snapshot pauses the running VM r.VM, saves its memory and device state
// and a frozen copy of its disks under the state dir, records the
// snapshot, then resumes the VM (or stops it with r.Stop). A failure
// removes what it wrote and leaves the VM running.
func (vm *vmManager) Snapshot(ctx context.Context, r SnapshotRequest, p imagemgr.Progress) (store.Snapshot, error) {
	v, unlock, err := vm.lockVM(ctx, r.VM)
	if err != nil {
		return store.Snapshot{}, err
	}
	defer unlock()
	if r.Name == "" {
		r.Name = v.Name + "-" + time.Now().UTC().Format("20060102-150405")
	}
	if err := imagemgr.ValidName("snapshot", r.Name); err != nil {
		return store.Snapshot{}, vmInputError{err}
	}
	if _, err := vm.st.GetSnapshot(ctx, r.Name); err == nil {
		return store.Snapshot{}, inputf("snapshot %q already exists: pick another name (--name), or remove it (banger snapshot rm %s)", r.Name, r.Name)
	}
	l := vm.getLive(v.ID)
	if l == nil || v.State != store.VMRunning {
		return store.Snapshot{}, inputf("VM %q is %s: only a running VM can be saved (banger vm start %s)", v.Name, v.State, v.Name)
	}
	saver, ok := l.m.(vmm.Snapshotter)
	if !ok {
		return store.Snapshot{}, inputf("VM %q runs under %s, which cannot save a running guest", v.Name, v.VMMKind)
	}
	if v.COWKind == workspace.DMSnap {
		return store.Snapshot{}, inputf("VM %q has a device-mapper root disk, which snapshots cannot freeze yet: make the VM with --cow reflink or copy", v.Name)
	}
	hello, err := vmm.Client(l.m.Agent()).Hello(ctx)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("ask the guest agent of %s what it can do: %w", v.Name, err)
	}
	if !hello.Has(client.CapResume) {
		return store.Snapshot{}, vmInputError{fmt.Errorf("VM %q: %w: a clone could not take an identity of its own", v.Name, client.ErrAgentTooOld)}
	}
	sn := store.Snapshot{ID: newVMID(), Name: r.Name, VMID: v.ID, VMName: v.Name, ImageID: v.ImageID,
		KernelID: v.KernelID, VMMKind: v.VMMKind, AgentVersion: hello.Version, VCPUs: v.VCPUs,
		MemoryBytes: v.MemoryBytes, DiskBytes: v.DiskBytes, State: store.SnapshotSaving, CreatedAt: time.Now().UTC()}
	sn.Dir = vm.snapshotDir(sn.ID)
	return vm.saveSnapshot(ctx, v, saver, sn, r.Stop, p)
}

// saveSnapshot does the work of Snapshot once it is allowed: the row (as
// saving), pause, disks, state, the row (ready), resume or stop.
func (vm *vmManager) saveSnapshot(ctx context.Context, v store.VM, saver vmm.Snapshotter, sn store.Snapshot, stop bool, p imagemgr.Progress) (store.Snapshot, error) {
	if err := os.MkdirAll(sn.Dir, 0o700); err != nil {
		return store.Snapshot{}, fmt.Errorf("make the snapshot's directory: %w", err)
	}
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		_ = os.RemoveAll(sn.Dir)
		return store.Snapshot{}, err
	}
	done, paused := false, false
	defer func() {
		bg := context.WithoutCancel(ctx)
		if paused {
			if err := saver.Resume(bg); err != nil {
				vm.log.Error("resume a VM after its snapshot", "vm", v.Name, "error", err)
			}
		}
		if !done {
			vm.dropSnapshot(bg, sn)
		}
	}()
	p.Phase("pausing " + v.Name)
	if err := saver.Pause(ctx); err != nil {
		return store.Snapshot{}, fmt.Errorf("pause %s: %w", v.Name, err)
	}
	paused = true
	p.Phase("freezing the disks")
	drives, err := vm.freezeDisks(ctx, v, sn.Dir)
	if err != nil {
		return store.Snapshot{}, err
	}
	p.Phase("saving memory and device state")
	st, err := saver.SaveState(ctx, sn.Dir)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("save the state of %s: %w", v.Name, err)
	}
	st = st.WithShape(vmm.Spec{VCPUs: v.VCPUs, MemoryMiB: int(v.MemoryBytes >> 20), Drives: drives, Net: vmm.Net{Tap: v.Tap}})
	if err := writeSnapState(sn.Dir, st); err != nil {
		return store.Snapshot{}, err
	}
	sn.VMMVersion = st.VMMVersion
	sn.Files = append(append(append([]string{}, st.Files...), drives...), snapStateFile)
	if sn.SizeBytes, err = vmm.FilesSize(sn.Dir, sn.Files); err != nil {
		return store.Snapshot{}, err
	}
	sn.State = store.SnapshotReady
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		return store.Snapshot{}, err
	}
	done = true
	if stop {
		// Resumed first, so that the guest shuts down cleanly and its own
		// disk is as it would be after any stop.
		paused = false
		if err := saver.Resume(ctx); err != nil {
			return sn, fmt.Errorf("snapshot %s saved, but resuming %s to stop it failed: %w", sn.Name, v.Name, err)
		}
		if _, err := vm.stopLocked(ctx, v, false); err != nil {
			return sn, fmt.Errorf("snapshot %s saved, but stopping %s failed: %w", sn.Name, v.Name, err)
		}
	}
	return sn, nil
}

// freezeDisks copies the paused VM's disks into dir (a reflink where the
// filesystem has them) and returns their names there, root first.
func (vm *vmManager) freezeDisks(ctx context.Context, v store.VM, dir string) ([]string, error) {
	disks := []string{snapRootDisk}
	if _, err := workspace.CloneDisk(ctx, v.COWDevice, filepath.Join(dir, snapRootDisk), workspace.Auto, workspace.CloneOptions{}); err != nil {
		return nil, fmt.Errorf("freeze the root disk of %s: %w", v.Name, err)
	}
	for _, extra := range vm.extraDisks(v) {
		if _, err := workspace.CloneDisk(ctx, extra, filepath.Join(dir, snapWorkDisk), workspace.Auto, workspace.CloneOptions{}); err != nil {
			return nil, fmt.Errorf("freeze the work disk of %s: %w", v.Name, err)
		}
		disks = append(disks, snapWorkDisk)
	}
	return disks, nil
}

func writeSnapState(dir string, st vmm.State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, snapStateFile), append(b, '\n'), atomicfile.Mode(0o600)); err != nil {
		return fmt.Errorf("write the snapshot's state: %w", err)
	}
	return nil
}

// readSnapState reads the State a snapshot saved.
func readSnapState(sn store.Snapshot) (vmm.State, error) {
	var st vmm.State
	b, err := os.ReadFile(filepath.Join(sn.Dir, snapStateFile))
	if err != nil {
		return st, fmt.Errorf("snapshot %s: %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, err, sn.Name)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("snapshot %s: its state does not parse (%v): remove it (banger snapshot rm %s) and take a new one", sn.Name, err, sn.Name)
	}
	return st, nil
}

// dropSnapshot removes a snapshot's files, then its row.
func (vm *vmManager) dropSnapshot(ctx context.Context, sn store.Snapshot) {
	if err := os.RemoveAll(sn.Dir); err != nil {
		vm.log.Warn("remove a snapshot's files", "snapshot", sn.Name, "error", err)
	}
	if err := vm.st.DeleteSnapshot(ctx, sn.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		vm.log.Warn("remove a snapshot's record", "snapshot", sn.Name, "error", err)
	}
}

// RemoveSnapshot removes the snapshot called name: its row first (refused
// while a VM made from it has its first start to come), then its files.
func (vm *vmManager) RemoveSnapshot(ctx context.Context, name string) error {
	sn, err := vm.st.GetSnapshot(ctx, name)
	if err != nil {
		return err
	}
	if err := vm.st.DeleteSnapshot(ctx, name); err != nil {
		return err
	}
	if err := os.RemoveAll(sn.Dir); err != nil {
		return fmt.Errorf("snapshot %s is gone from the store, but its files in %s were not all removed: %w", name, sn.Dir, err)
	}
	return nil
}

// removeUnfinishedSnapshots removes the snapshots a daemon that died while
// saving left half-written.
func (vm *vmManager) removeUnfinishedSnapshots(ctx context.Context) {
	sns, err := vm.st.ListSnapshots(ctx)
	if err != nil {
		vm.log.Warn("list snapshots", "error", err)
		return
	}
	for _, sn := range sns {
		if sn.State == store.SnapshotSaving {
			vm.log.Warn("removing a snapshot left half-saved", "snapshot", sn.Name)
			vm.dropSnapshot(ctx, sn)
		}
	}
}
