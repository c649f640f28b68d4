package daemon

import (
	"context"
	"errors"

	"banger/internal/daemon/imagemgr"
	"banger/internal/store"
)

// SnapshotRequest asks for a snapshot of a running VM.
type SnapshotRequest struct {
	VM   string // the running VM to save
	Name string // the snapshot's name; "" picks <vm>-<time>
	Stop bool   // stop the VM after saving instead of resuming it
}

// Snapshot pauses the running VM r.VM, saves its memory and device state
// and a frozen copy of its disks under the state dir, records the
// snapshot, then resumes the VM (or stops it with r.Stop).
func (vm *vmManager) Snapshot(ctx context.Context, r SnapshotRequest, p imagemgr.Progress) (store.Snapshot, error) {
	return store.Snapshot{}, errors.New("not implemented yet")
}

// RemoveSnapshot removes the snapshot called name and its files; a VM made
// from it that has not yet had its first start keeps it.
func (vm *vmManager) RemoveSnapshot(ctx context.Context, name string) error {
	return errors.New("not implemented yet")
}
