package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Snapshot states.
const (
	SnapshotSaving = "saving" // being written; a crash leaves it to be removed
	SnapshotReady  = "ready"  // complete and restorable
)

// Snapshot is a saved VM: memory and device state and frozen disks, with
// what it can only be restored with.
type Snapshot struct {
	ID, Name            string
	VMID, VMName        string // the VM it was taken from (it may be gone)
	ImageID, KernelID   string
	VMMKind, VMMVersion string
	AgentVersion        string
	VCPUs               int
	MemoryBytes         int64
	DiskBytes           int64
	Dir                 string   // where its files are
	Files               []string // plain file names under Dir
	SizeBytes           int64
	State               string
	Warm                bool // made by the warm pool
	CreatedAt           time.Time
}

const snapshotColumns = `id, name, vm_id, vm_name, image_id, kernel_id, vmm_kind, vmm_version, agent_version,
	vcpus, memory_bytes, disk_bytes, dir, files, size_bytes, state, warm, created_at`

func (sn Snapshot) check() error {
	if sn.ID == "" || sn.Name == "" || sn.ImageID == "" || sn.KernelID == "" || sn.VMMKind == "" ||
		sn.Dir == "" || sn.CreatedAt.IsZero() {
		return fmt.Errorf("snapshot %q: id, name, image, kernel, vmm, dir and creation time are required", sn.Name)
	}
	if sn.VCPUs < 1 || sn.MemoryBytes <= 0 || sn.DiskBytes <= 0 || sn.SizeBytes < 0 {
		return fmt.Errorf("snapshot %q: vcpus, memory and disk must be positive", sn.Name)
	}
	if sn.State != SnapshotSaving && sn.State != SnapshotReady {
		return fmt.Errorf("snapshot %q: state %q is not %s or %s", sn.Name, sn.State, SnapshotSaving, SnapshotReady)
	}
	for _, f := range sn.Files {
		if f == "" || f == "." || f == ".." || strings.ContainsRune(f, '/') || f != filepath.Base(f) {
			return fmt.Errorf("snapshot %q: file %q is not a plain file name", sn.Name, f)
		}
	}
	return nil
}

// PutSnapshot inserts a snapshot, or replaces the one with the same id.
func (s *Store) PutSnapshot(ctx context.Context, sn Snapshot) error {
	if err := sn.check(); err != nil {
		return err
	}
	files := sn.Files
	if files == nil {
		files = []string{}
	}
	fj, err := json.Marshal(files)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO snapshots (`+snapshotColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name=excluded.name, vm_id=excluded.vm_id, vm_name=excluded.vm_name,
		image_id=excluded.image_id, kernel_id=excluded.kernel_id, vmm_kind=excluded.vmm_kind,
		vmm_version=excluded.vmm_version, agent_version=excluded.agent_version, vcpus=excluded.vcpus,
		memory_bytes=excluded.memory_bytes, disk_bytes=excluded.disk_bytes, dir=excluded.dir,
		files=excluded.files, size_bytes=excluded.size_bytes, state=excluded.state, warm=excluded.warm`,
		sn.ID, sn.Name, sn.VMID, sn.VMName, sn.ImageID, sn.KernelID, sn.VMMKind, sn.VMMVersion, sn.AgentVersion,
		sn.VCPUs, sn.MemoryBytes, sn.DiskBytes, sn.Dir, string(fj), sn.SizeBytes, sn.State, boolInt(sn.Warm),
		formatTime(sn.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("snapshot %q: %w", sn.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("save snapshot %q: %w", sn.Name, err)
	}
	return nil
}

func scanSnapshot(r rowScanner) (Snapshot, error) {
	var sn Snapshot
	var files, created string
	var warm int
	err := r.Scan(&sn.ID, &sn.Name, &sn.VMID, &sn.VMName, &sn.ImageID, &sn.KernelID, &sn.VMMKind, &sn.VMMVersion,
		&sn.AgentVersion, &sn.VCPUs, &sn.MemoryBytes, &sn.DiskBytes, &sn.Dir, &files, &sn.SizeBytes, &sn.State,
		&warm, &created)
	if err != nil {
		return sn, err
	}
	sn.Warm = warm == 1
	if err := json.Unmarshal([]byte(files), &sn.Files); err != nil {
		return sn, fmt.Errorf("snapshot %q: its file list does not parse: %w", sn.Name, err)
	}
	if sn.CreatedAt, err = parseTime(created); err != nil {
		return sn, fmt.Errorf("snapshot %q: created_at: %w", sn.Name, err)
	}
	return sn, nil
}

// GetSnapshot returns the snapshot called name.
func (s *Store) GetSnapshot(ctx context.Context, name string) (Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("snapshot %q: %w", name, ErrNotFound)
	}
	return sn, err
}

// ListSnapshots returns every snapshot, by name.
func (s *Store) ListSnapshots(ctx context.Context) ([]Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// DeleteSnapshot removes the snapshot called name from the store (its
// files are the caller's to remove). A VM made from it whose first start
// is still to come needs it: that is an *InUseError naming the VMs.
func (s *Store) DeleteSnapshot(ctx context.Context, name string) error {
	return s.deleteSnapshot(ctx, "name", name)
}

// DeleteSnapshotByID is DeleteSnapshot for the snapshot with id: a caller
// that read a snapshot's row removes that one, never another made under
// its name since.
func (s *Store) DeleteSnapshotByID(ctx context.Context, id string) error {
	return s.deleteSnapshot(ctx, "id", id)
}

func (s *Store) deleteSnapshot(ctx context.Context, column, key string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var id, name string
	// column is one of two constants, never the caller's input.
	err = tx.QueryRowContext(ctx, `SELECT id, name FROM snapshots WHERE `+column+` = ?`, key).Scan(&id, &name)
	if errors.Is(err, sql.ErrNoRows) {
		if column == "id" {
			return fmt.Errorf("snapshot id %q: %w", key, ErrNotFound)
		}
		return fmt.Errorf("snapshot %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return err
	}
	vms, err := namesUsing(ctx, tx, "vms", "restore_from", id)
	if err != nil {
		return err
	}
	if len(vms) > 0 {
		return &InUseError{What: "snapshot", Name: name, VMs: vms}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete snapshot %q: %w", name, err)
	}
	return tx.Commit()
}

// GetSnapshotByID returns the snapshot with the given id.
func (s *Store) GetSnapshotByID(ctx context.Context, id string) (Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("snapshot id %q: %w", id, ErrNotFound)
	}
	return sn, err
}
