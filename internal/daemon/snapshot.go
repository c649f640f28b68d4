package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	Warm bool   // made by the warm pool (warmpool.go)
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
		r.Name = defaultSnapshotName(v.Name, time.Now())
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
		MemoryBytes: v.MemoryBytes, DiskBytes: v.DiskBytes, State: store.SnapshotSaving, Warm: r.Warm, CreatedAt: time.Now().UTC()}
	sn.Dir = vm.snapshotDir(sn.ID)
	return vm.saveSnapshot(ctx, v, saver, sn, r.Stop, p)
}

// saveSnapshot does the work of Snapshot once it is allowed: the row (as
// saving), pause, disks, state, the row (ready), resume or stop.
func (vm *vmManager) saveSnapshot(ctx context.Context, v store.VM, saver vmm.Snapshotter, sn store.Snapshot, stop bool, p imagemgr.Progress) (store.Snapshot, error) {
	// The row (saving) before the directory: a bangerd killed in between
	// leaves a row the next one removes, never a directory nobody knows.
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		return store.Snapshot{}, err
	}
	if err := os.MkdirAll(sn.Dir, 0o700); err != nil {
		vm.dropSnapshot(context.WithoutCancel(ctx), sn)
		return store.Snapshot{}, fmt.Errorf("make the snapshot's directory: %w", err)
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
	// The guest runs again before the row says ready: a bangerd killed
	// from Pause on leaves the row saving, and the next bangerd, which
	// removes such rows, resumes their VMs (removeUnfinishedSnapshots). A
	// guest paused under a ready row would stay paused for good. With
	// stop, too, the guest is resumed first, so that it shuts down
	// cleanly and its own disk is as it would be after any stop.
	p.Phase("resuming " + v.Name)
	paused = false
	rerr := saver.Resume(ctx)
	p.Phase("recording the snapshot")
	sn.State = store.SnapshotReady
	if err := vm.st.PutSnapshot(context.WithoutCancel(ctx), sn); err != nil {
		return store.Snapshot{}, err
	}
	done = true
	if rerr != nil {
		return sn, fmt.Errorf("snapshot %s saved, but %s could not be resumed (stop and start it): %w", sn.Name, v.Name, rerr)
	}
	if stop {
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

// maxSnapState bounds the state.json a snapshot's directory holds: banger
// writes well under a KiB, and a planted huge one must not be read whole.
const maxSnapState = 1 << 20

// readSnapState reads the State a snapshot saved, and refuses one that
// disagrees with the snapshot's record (a state.json edited to claim
// another VMM, version or shape) or whose files are not the plain, regular
// files of the snapshot's directory (a link planted there to lead a
// restore to a host file).
func readSnapState(sn store.Snapshot) (vmm.State, error) {
	var st vmm.State
	if err := checkSnapFiles(sn); err != nil {
		return st, err
	}
	f, err := os.OpenFile(filepath.Join(sn.Dir, snapStateFile), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return st, fmt.Errorf("snapshot %s: %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, err, sn.Name)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSnapState+1))
	if err != nil {
		return st, fmt.Errorf("snapshot %s: read its state: %w", sn.Name, err)
	}
	if st, err = parseSnapState(b); err != nil {
		return st, fmt.Errorf("snapshot %s: its state %s: %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, snapStateFile, err, sn.Name)
	}
	if err := stateMatchesRecord(st, sn); err != nil {
		return st, fmt.Errorf("snapshot %s: its state %s %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, snapStateFile, err, sn.Name)
	}
	return st, nil
}

// parseSnapState decodes a state.json: at most maxSnapState bytes, its
// files plain names.
func parseSnapState(b []byte) (vmm.State, error) {
	var st vmm.State
	if len(b) > maxSnapState {
		return st, fmt.Errorf("is over %d bytes", maxSnapState)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return vmm.State{}, fmt.Errorf("does not parse (%v)", err)
	}
	for _, f := range st.Files {
		if !plainName(f) {
			return vmm.State{}, fmt.Errorf("names %q, which is not a plain file name", f)
		}
	}
	return st, nil
}

func plainName(f string) bool {
	return f != "" && f != "." && f != ".." && !strings.ContainsRune(f, '/') && f == filepath.Base(f)
}

// stateMatchesRecord says where st disagrees with the store's record of
// the snapshot, which banger wrote itself when it saved it.
func stateMatchesRecord(st vmm.State, sn store.Snapshot) error {
	listed := map[string]bool{}
	for _, f := range sn.Files {
		listed[f] = true
	}
	switch {
	case st.VMM != sn.VMMKind:
		return fmt.Errorf("says vmm %q but the snapshot was saved under %q", st.VMM, sn.VMMKind)
	case st.VMMVersion != sn.VMMVersion:
		return fmt.Errorf("says vmm version %q but the snapshot was saved with %q", st.VMMVersion, sn.VMMVersion)
	case st.MemoryMiB != int(sn.MemoryBytes>>20): // as saveSnapshot words it
		return fmt.Errorf("says %d MiB of memory but the snapshot has %d MiB", st.MemoryMiB, sn.MemoryBytes>>20)
	case st.VCPUs != sn.VCPUs:
		return fmt.Errorf("says %d vCPUs but the snapshot has %d", st.VCPUs, sn.VCPUs)
	case st.Drives < 1 || st.Drives > 2:
		return fmt.Errorf("says %d disks; a snapshot has 1 or 2", st.Drives)
	}
	for _, f := range st.Files {
		if !listed[f] {
			return fmt.Errorf("names file %q, which the snapshot's record does not list", f)
		}
	}
	return nil
}

// checkSnapFiles refuses a snapshot whose directory or listed files are
// not what banger wrote: a directory and regular files, not links (a
// restore or a clone opens them as root and would follow a link planted
// there to any host file).
func checkSnapFiles(sn store.Snapshot) error {
	fi, err := os.Lstat(sn.Dir)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, err, sn.Name)
	}
	if !fi.IsDir() {
		return fmt.Errorf("snapshot %s: its directory %s is not a directory (%v): remove it (banger snapshot rm %s)", sn.Name, sn.Dir, fi.Mode().Type(), sn.Name)
	}
	for _, f := range sn.Files {
		fi, err := os.Lstat(filepath.Join(sn.Dir, f))
		if err != nil {
			return fmt.Errorf("snapshot %s: %w: remove it (banger snapshot rm %s) and take a new one", sn.Name, err, sn.Name)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("snapshot %s: its file %s is not a regular file (%v), so it is not what banger saved: remove it (banger snapshot rm %s)", sn.Name, f, fi.Mode().Type(), sn.Name)
		}
	}
	return nil
}

// snapTrashPrefix names the directories of snapshots being removed: a
// snapshot's directory is renamed to it, then deleted, so that a bangerd
// killed halfway leaves a name the next one knows to delete.
const snapTrashPrefix = ".removing-"

// removeSnapFiles removes a snapshot's directory, only where banger puts
// it: a record naming another directory (a store copied from another
// install, or edited) does not make bangerd delete that directory.
func (vm *vmManager) removeSnapFiles(sn store.Snapshot) error {
	if want := vm.snapshotDir(sn.ID); filepath.Clean(sn.Dir) != want {
		return fmt.Errorf("its directory %s is not %s, where this bangerd keeps it: left alone, remove it yourself if it is garbage", sn.Dir, want)
	}
	trash := vm.snapshotDir(snapTrashPrefix + sn.ID)
	if err := os.Rename(sn.Dir, trash); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(trash)
}

// sweepSnapTrash deletes what removals of snapshots cut short left.
func (vm *vmManager) sweepSnapTrash() {
	left, _ := filepath.Glob(vm.snapshotDir(snapTrashPrefix + "*"))
	for _, dir := range left {
		if err := os.RemoveAll(dir); err != nil {
			vm.log.Warn("remove what a snapshot removal cut short left", "dir", dir, "error", err)
		}
	}
}

// dropSnapshot removes a snapshot's files, then its row.
func (vm *vmManager) dropSnapshot(ctx context.Context, sn store.Snapshot) {
	if err := vm.removeSnapFiles(sn); err != nil {
		vm.log.Warn("remove a snapshot's files", "snapshot", sn.Name, "error", err)
	}
	if err := vm.st.DeleteSnapshotByID(ctx, sn.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		vm.log.Warn("remove a snapshot's record", "snapshot", sn.Name, "error", err)
	}
}

// RemoveSnapshot removes the snapshot called name: its row first (refused
// while a VM made from it has its first start to come, or while it is
// being saved), then its files.
func (vm *vmManager) RemoveSnapshot(ctx context.Context, name string) error {
	sn, err := vm.st.GetSnapshot(ctx, name)
	if err != nil {
		return err
	}
	if sn.State == store.SnapshotSaving {
		// Its files are being written: removing them now would leave the
		// save to record a snapshot whose files are gone.
		return inputf("snapshot %q is still being saved: wait for it (banger op ls shows the vm snapshot), then remove it", name)
	}
	if err := vm.st.DeleteSnapshotByID(ctx, sn.ID); err != nil {
		var inUse *store.InUseError
		if errors.As(err, &inUse) && len(inUse.VMs) > 0 {
			return fmt.Errorf("%w; or start them: a VM made from a snapshot needs it only until its first start (banger vm start %s)",
				err, strings.Join(inUse.VMs, " "))
		}
		return err
	}
	if err := vm.removeSnapFiles(sn); err != nil {
		return fmt.Errorf("snapshot %s is gone from the store, but its files were not all removed: %w", name, err)
	}
	return nil
}

// removeUnfinishedSnapshots removes the snapshots a daemon that died while
// saving left half-written, and resumes the VMs it left paused: a save
// pauses its VM, and only the daemon that paused it would have resumed
// it. It runs after the running VMs have been adopted.
func (vm *vmManager) removeUnfinishedSnapshots(ctx context.Context) {
	vm.sweepSnapTrash()
	sns, err := vm.st.ListSnapshots(ctx)
	if err != nil {
		vm.log.Warn("list snapshots", "error", err)
		return
	}
	for _, sn := range sns {
		if sn.State != store.SnapshotSaving {
			continue
		}
		vm.log.Warn("removing a snapshot left half-saved", "snapshot", sn.Name)
		vm.dropSnapshot(ctx, sn)
		l := vm.getLive(sn.VMID)
		if l == nil {
			continue
		}
		saver, ok := l.m.(vmm.Snapshotter)
		if !ok {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := saver.Resume(rctx); err != nil {
			vm.log.Error("resume a VM a snapshot cut short left paused: resume it by stopping and starting it", "vm", sn.VMName, "error", err)
		} else {
			vm.log.Warn("resumed a VM a snapshot cut short had left paused", "vm", sn.VMName)
		}
		cancel()
	}
}
