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
	APISocket              string
	// VMMRequested is the VMM asked for at create ("auto", "qemu",
	// "firecracker"); VMMKind is the one the last start resolved it to
	// ("" before the first start). A start resolves VMMRequested again.
	VMMRequested, VMMKind string
	// RestoreFrom is the id of the snapshot the VM was made from while its
	// first start, which resumes that snapshot, is still to come; "" after.
	RestoreFrom          string
	IP, MAC, Tap         string
	COWKind, COWDevice   string
	CreatedAt, UpdatedAt time.Time
	StartedAt, StoppedAt time.Time // zero = never
	LastError            string
	VMMReason, RunDir    string
	SSHPort              int
	AgentSocket          string
	Publish              []PortMap // host ports forwarded to the guest
	Network              string    // "bridge" or "user" once started
}

const vmColumns = `id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, state, pid, pid_start_time,
	api_socket, vmm_kind, ip, mac, tap, cow_kind, cow_device, created_at, updated_at, started_at, stopped_at, last_error,
	vmm_reason, run_dir, ssh_port, agent_socket, network, vmm_requested, restore_from`

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

// PortMap is one published port: HostPort on the host forwarded to
// GuestPort in the guest.
type PortMap struct {
	HostPort, GuestPort uint16
}

// String is "HOSTPORT:GUESTPORT".
func (p PortMap) String() string { return fmt.Sprintf("%d:%d", p.HostPort, p.GuestPort) }

// PutVM inserts a VM, or replaces the one with the same id, with its
// published ports, in one transaction.
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
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save VM %q: %w", v.Name, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	_, err = tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET name=excluded.name, image_id=excluded.image_id, kernel_id=excluded.kernel_id,
		vcpus=excluded.vcpus, memory_bytes=excluded.memory_bytes, disk_bytes=excluded.disk_bytes, state=excluded.state,
		pid=excluded.pid, pid_start_time=excluded.pid_start_time, api_socket=excluded.api_socket,
		vmm_kind=excluded.vmm_kind, ip=excluded.ip, mac=excluded.mac, tap=excluded.tap, cow_kind=excluded.cow_kind,
		cow_device=excluded.cow_device, updated_at=excluded.updated_at, started_at=excluded.started_at,
		stopped_at=excluded.stopped_at, last_error=excluded.last_error, vmm_reason=excluded.vmm_reason,
		run_dir=excluded.run_dir, ssh_port=excluded.ssh_port, agent_socket=excluded.agent_socket,
		network=excluded.network, vmm_requested=excluded.vmm_requested, restore_from=excluded.restore_from`,
		v.ID, v.Name, v.ImageID, v.KernelID, v.VCPUs, v.MemoryBytes, v.DiskBytes, v.State, v.PID, int64(v.PIDStartTime),
		v.APISocket, v.VMMKind, v.IP, v.MAC, v.Tap, v.COWKind, v.COWDevice, formatTime(v.CreatedAt),
		formatTime(v.UpdatedAt), nullTime(v.StartedAt), nullTime(v.StoppedAt), v.LastError,
		v.VMMReason, v.RunDir, v.SSHPort, v.AgentSocket, v.Network, v.VMMRequested, v.RestoreFrom)
	if isUnique(err) {
		return fmt.Errorf("VM %q: %w", v.Name, ErrExists)
	}
	if err == nil {
		err = putPorts(ctx, tx, v.ID, v.Publish)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("save VM %q: %w", v.Name, err)
	}
	return nil
}

// putPorts replaces the published ports of VM id.
func putPorts(ctx context.Context, tx *sql.Tx, id string, ports []PortMap) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM vm_ports WHERE vm_id = ?`, id); err != nil {
		return err
	}
	for _, p := range ports {
		if _, err := tx.ExecContext(ctx, `INSERT INTO vm_ports (vm_id, host_port, guest_port) VALUES (?, ?, ?)`,
			id, int(p.HostPort), int(p.GuestPort)); err != nil {
			if isUnique(err) {
				return fmt.Errorf("host port %d is published twice", p.HostPort)
			}
			return fmt.Errorf("published port %s: %w", p, err)
		}
	}
	return nil
}

// portsOf returns the published ports of the VMs with ids, by VM id, each
// VM's in host port order.
func (s *Store) portsOf(ctx context.Context, where string, args ...any) (map[string][]PortMap, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm_id, host_port, guest_port FROM vm_ports `+where+` ORDER BY vm_id, host_port`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]PortMap{}
	for rows.Next() {
		var id string
		var h, g int
		if err := rows.Scan(&id, &h, &g); err != nil {
			return nil, err
		}
		out[id] = append(out[id], PortMap{HostPort: uint16(h), GuestPort: uint16(g)})
	}
	return out, rows.Err()
}

func scanVM(r rowScanner) (VM, error) {
	var v VM
	var startTime int64
	var created, updated string
	var started, stopped sql.NullString
	if err := r.Scan(&v.ID, &v.Name, &v.ImageID, &v.KernelID, &v.VCPUs, &v.MemoryBytes, &v.DiskBytes, &v.State,
		&v.PID, &startTime, &v.APISocket, &v.VMMKind, &v.IP, &v.MAC, &v.Tap, &v.COWKind, &v.COWDevice,
		&created, &updated, &started, &stopped, &v.LastError, &v.VMMReason, &v.RunDir, &v.SSHPort, &v.AgentSocket, &v.Network, &v.VMMRequested, &v.RestoreFrom); err != nil {
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
	if err != nil {
		return VM{}, err
	}
	ports, err := s.portsOf(ctx, `WHERE vm_id = ?`, v.ID)
	v.Publish = ports[v.ID]
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
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close() // before the next query: the store may hold one connection
	ports, err := s.portsOf(ctx, "")
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Publish = ports[out[i].ID]
	}
	return out, nil
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
