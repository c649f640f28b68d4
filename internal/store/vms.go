package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// VM states.
const (
	VMCreated  = "created"
	VMStarting = "starting"
	VMRunning  = "running"
	VMStopping = "stopping"
	VMStopped  = "stopped"
	VMFailed   = "failed"
)

// VM is one microVM as recorded.
type VM struct {
	ID, Name               string
	ImageID, KernelID      string
	VCPUs                  int
	MemoryBytes, DiskBytes int64
	State                  string
	PID                    int
	PIDStartTime           uint64
	APISocket, VMMKind     string
	IP, MAC, Tap           string
	COWKind, COWDevice     string
	CreatedAt, UpdatedAt   time.Time
	StartedAt, StoppedAt   time.Time // zero = never
	LastError              string
	VMMReason, RunDir      string
	SSHPort                int
	AgentSocket            string
	Publish                string // "HOSTPORT:GUESTPORT,..."
	Network                string // "bridge" or "user" once started
}

const vmColumns = `id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, state, pid, pid_start_time,
	api_socket, vmm_kind, ip, mac, tap, cow_kind, cow_device, created_at, updated_at, started_at, stopped_at, last_error,
	vmm_reason, run_dir, ssh_port, agent_socket, publish, network`

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

// PutVM inserts a VM, or replaces the one with the same id.
func (s *Store) PutVM(ctx context.Context, v VM) error {
	if v.ID == "" || v.Name == "" || v.CreatedAt.IsZero() {
		return fmt.Errorf("VM %q: id, name and creation time are required", v.Name)
	}
	if v.UpdatedAt.IsZero() {
		v.UpdatedAt = v.CreatedAt
	}
	if v.State == "" {
		v.State = VMCreated
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name=excluded.name, image_id=excluded.image_id, kernel_id=excluded.kernel_id,
		vcpus=excluded.vcpus, memory_bytes=excluded.memory_bytes, disk_bytes=excluded.disk_bytes, state=excluded.state,
		pid=excluded.pid, pid_start_time=excluded.pid_start_time, api_socket=excluded.api_socket,
		vmm_kind=excluded.vmm_kind, ip=excluded.ip, mac=excluded.mac, tap=excluded.tap, cow_kind=excluded.cow_kind,
		cow_device=excluded.cow_device, updated_at=excluded.updated_at, started_at=excluded.started_at,
		stopped_at=excluded.stopped_at, last_error=excluded.last_error, vmm_reason=excluded.vmm_reason,
		run_dir=excluded.run_dir, ssh_port=excluded.ssh_port, agent_socket=excluded.agent_socket,
		publish=excluded.publish, network=excluded.network`,
		v.ID, v.Name, v.ImageID, v.KernelID, v.VCPUs, v.MemoryBytes, v.DiskBytes, v.State, v.PID, int64(v.PIDStartTime),
		v.APISocket, v.VMMKind, v.IP, v.MAC, v.Tap, v.COWKind, v.COWDevice, formatTime(v.CreatedAt),
		formatTime(v.UpdatedAt), nullTime(v.StartedAt), nullTime(v.StoppedAt), v.LastError,
		v.VMMReason, v.RunDir, v.SSHPort, v.AgentSocket, v.Publish, v.Network)
	if isUnique(err) {
		return fmt.Errorf("VM %q: %w", v.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("save VM %q: %w", v.Name, err)
	}
	return nil
}

func scanVM(r rowScanner) (VM, error) {
	var v VM
	var startTime int64
	var created, updated string
	var started, stopped sql.NullString
	if err := r.Scan(&v.ID, &v.Name, &v.ImageID, &v.KernelID, &v.VCPUs, &v.MemoryBytes, &v.DiskBytes, &v.State,
		&v.PID, &startTime, &v.APISocket, &v.VMMKind, &v.IP, &v.MAC, &v.Tap, &v.COWKind, &v.COWDevice,
		&created, &updated, &started, &stopped, &v.LastError, &v.VMMReason, &v.RunDir, &v.SSHPort, &v.AgentSocket, &v.Publish, &v.Network); err != nil {
		return VM{}, err
	}
	v.PIDStartTime = uint64(startTime)
	var err error
	parse := func(s string) time.Time {
		t, e := parseTime(s)
		if e != nil && err == nil {
			err = fmt.Errorf("VM %q: bad timestamp %q: %w", v.Name, s, e)
		}
		return t
	}
	v.CreatedAt = parse(created)
	v.UpdatedAt = parse(updated)
	if started.Valid {
		v.StartedAt = parse(started.String)
	}
	if stopped.Valid {
		v.StoppedAt = parse(stopped.String)
	}
	return v, err
}

// GetVM returns the VM with the given name.
func (s *Store) GetVM(ctx context.Context, name string) (VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("VM %q: %w", name, ErrNotFound)
	}
	return v, err
}

// ListVMs returns every VM by name.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVM removes the VM row by name.
func (s *Store) DeleteVM(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete VM %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("VM %q: %w", name, ErrNotFound)
	}
	return nil
}
