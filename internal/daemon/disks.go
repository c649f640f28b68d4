package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/workspace"
	"banger/internal/store"
)

// snapshotName is a VM's dm snapshot: under this daemon's uid, since dm
// names are shared by every user of the host (and the helper insists).
func snapshotName(id string) string { return snapshotPrefix() + id }

func snapshotPrefix() string { return privhelper.SnapshotPrefix(uint32(os.Getuid())) }

// snapshotsAvailable says why dm snapshots cannot be made (no way to root,
// or no device-mapper), or nil.
func (vm *vmManager) snapshotsAvailable(ctx context.Context) error {
	ops, err := vm.priv.disks(ctx, vm.cfg.StateDir)
	if err != nil {
		return err
	}
	return ops.SnapshotsAvailable(ctx)
}

// rootDevice returns the path the VMM opens as /dev/vda, setting up the
// dm snapshot of a dmsnap VM.
func (vm *vmManager) rootDevice(ctx context.Context, v store.VM, im store.Image) (string, error) {
	if v.COWKind != workspace.DMSnap {
		return v.COWDevice, nil
	}
	// The snapshot reads the image's rootfs at every start: check a user's
	// file again, as create did.
	if err := vm.images.CheckFiles(im); err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	ops, err := vm.priv.disks(ctx, vm.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	snap, err := ops.CreateSnapshot(ctx, snapshotName(v.ID), im.RootfsPath, v.COWDevice, v.DiskBytes)
	if err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	return snap.Device, nil
}

// releaseRoot tears a dmsnap VM's snapshot down (its COW file stays).
func (vm *vmManager) releaseRoot(ctx context.Context, v store.VM) {
	if v.COWKind != workspace.DMSnap {
		return
	}
	ops, err := vm.priv.get(ctx)
	if err == nil {
		err = ops.RemoveSnapshot(ctx, snapshotName(v.ID))
	}
	if err != nil {
		vm.log.Warn("remove the root snapshot", "vm", v.Name, "error", err)
	}
}

// drives lists the VM's extra disks after the root.
func (vm *vmManager) extraDisks(v store.VM) []string {
	work := vm.ws.Path(v.ID, workspace.WorkDiskName)
	if _, err := os.Stat(work); err == nil {
		return []string{work}
	}
	return nil
}

// removeLeftoverSnapshots removes the snapshots of this bangerd's VMs (their
// changes live in its state dir) that do not run. Only a daemon that can
// reach root has any; without one there is nothing to look at.
func (vm *vmManager) removeLeftoverSnapshots(ctx context.Context) {
	ops, err := vm.priv.get(ctx)
	if err != nil {
		return
	}
	snaps, err := ops.ListSnapshots(ctx)
	if err != nil {
		vm.log.Warn("list root snapshots", "error", err)
		return
	}
	state, err := filepath.EvalSymlinks(vm.cfg.StateDir)
	if err != nil {
		state = vm.cfg.StateDir
	}
	for _, sn := range snaps {
		rel, err := filepath.Rel(state, sn.COWFile)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // another user's, or another state dir's
		}
		id, mine := strings.CutPrefix(sn.Name, snapshotPrefix())
		if !mine {
			continue
		}
		if !vm.isLive(id) {
			vm.log.Warn("removing leftover root snapshot", "name", sn.Name)
			if err := ops.RemoveSnapshot(ctx, sn.Name); err != nil {
				vm.log.Warn("remove leftover root snapshot", "name", sn.Name, "error", err)
			}
		}
	}
}
