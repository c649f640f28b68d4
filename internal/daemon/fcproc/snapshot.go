package fcproc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"banger/internal/atomicfile"
	"banger/internal/daemon/vmm"
)

// Names of the files SaveState writes in its directory.
const (
	StateFileName  = "fc.vmstate"    // device and vCPU state
	MemoryFileName = "fc.mem"        // guest memory, the File backend's file
	PathsFileName  = "fc.paths.json" // the paths the snapshot names (savedPaths)
)

// VMConfig is the part of GET /vm/config's answer banger reads.
type VMConfig struct {
	Drives []Drive `json:"drives"`
	Vsock  *Vsock  `json:"vsock"`
}

// VMConfig reads the configuration of the VM.
func (c *Client) VMConfig(ctx context.Context) (VMConfig, error) {
	var v VMConfig
	err := c.do(ctx, "GET", "/vm/config", nil, &v)
	return v, err
}

// savedPaths are the paths a snapshot holds: Firecracker 1.14 opens the
// drives and binds the vsock socket at them again when it loads the
// snapshot, and has no override for either. banger gives an unjailed
// Firecracker names relative to the VM's directory (DriveLinkName,
// VsockSocketName), so they fit any VM of the same drives; snapshots made
// before that hold the parent's absolute paths.
type savedPaths struct {
	Vsock  string   `json:"vsock"`
	Drives []string `json:"drives"`
}

func (sp savedPaths) String() string {
	return fmt.Sprintf("vsock %s, drives %s", sp.Vsock, strings.Join(sp.Drives, " "))
}

// relativePaths are the paths an unjailed Firecracker is given for drives
// ids: what a snapshot of it holds.
func relativePaths(ids []string) savedPaths {
	sp := savedPaths{Vsock: VsockSocketName}
	for _, id := range ids {
		sp.Drives = append(sp.Drives, DriveLinkName(id))
	}
	return sp
}

// checkPaths refuses a restore whose vsock socket or drives are not where
// the snapshot names them (want is the clone's relative names; legacy the
// absolute paths of the VM itself, which an older snapshot of it holds):
// Firecracker would bind another VM's socket path and write to another
// VM's disks.
func checkPaths(dir string, want, legacy savedPaths) error {
	b, err := os.ReadFile(filepath.Join(dir, PathsFileName))
	if err != nil {
		return fmt.Errorf("read the snapshot's paths: %w", err)
	}
	var saved savedPaths
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("read the snapshot's paths in %s: %w", dir, err)
	}
	for _, ok := range []savedPaths{want, legacy} {
		if saved.Vsock == ok.Vsock && slices.Equal(saved.Drives, ok.Drives) {
			return nil
		}
	}
	hint := "Firecracker 1.14 reopens a snapshot's disks and vsock socket at the paths it holds; this one holds absolute paths (its VM was started by an earlier build of banger), which only the VM it was taken from has: restore it there, or restart that VM and take a new snapshot"
	if !filepath.IsAbs(saved.Vsock) && !slices.ContainsFunc(saved.Drives, filepath.IsAbs) {
		hint = "the snapshot's drives do not line up with this VM's: restore it with the disks it was saved with"
	}
	return &vmm.MismatchError{Field: "Firecracker paths", Saved: saved.String(), Want: want.String(), Hint: hint}
}

// VM is the body of PATCH /vm.
type VM struct {
	State string `json:"state"` // "Paused" or "Resumed"
}

// SnapshotCreateParams is the body of PUT /snapshot/create.
type SnapshotCreateParams struct {
	MemFilePath  string `json:"mem_file_path"`
	SnapshotPath string `json:"snapshot_path"`
	SnapshotType string `json:"snapshot_type,omitempty"` // "Full" or "Diff"
}

// MemoryBackend says where a loaded snapshot's memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // "File" or "Uffd"
	BackendPath string `json:"backend_path"`
}

// NetworkOverride gives a restored interface another tap.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  *bool             `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
}

// PatchVM pauses ("Paused") or resumes ("Resumed") a started VM.
func (c *Client) PatchVM(ctx context.Context, state string) error {
	return c.do(ctx, "PATCH", "/vm", VM{State: state}, nil)
}

// CreateSnapshot saves a paused VM.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, "PUT", "/snapshot/create", p, nil)
}

// LoadSnapshot loads a saved VM into a fresh Firecracker, configured with
// nothing but its logger and metrics.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, "PUT", "/snapshot/load", p, nil)
}

// Pause pauses the VM's vCPUs.
func (p *Process) Pause(ctx context.Context) error {
	if err := p.client.PatchVM(ctx, "Paused"); err != nil {
		return fmt.Errorf("pause the VM: %w", err)
	}
	return nil
}

// Resume runs a paused VM again.
func (p *Process) Resume(ctx context.Context) error {
	if err := p.client.PatchVM(ctx, "Resumed"); err != nil {
		return fmt.Errorf("resume the VM: %w", err)
	}
	return nil
}

// errJailed is why a jailed Firecracker is neither saved nor restored yet:
// its paths are inside its chroot, where the files would have to be
// linked in and out.
var errJailed = fmt.Errorf("%w under the jailer yet (its files live in the chroot)", vmm.ErrNoSnapshots)

// SaveState writes a full snapshot of the paused VM into dir
// (StateFileName and MemoryFileName); on error neither is left. It returns
// the running Firecracker's version.
func (p *Process) SaveState(ctx context.Context, dir string) (string, error) {
	if p.Jailed {
		return "", fmt.Errorf("save the VM's state: %w", errJailed)
	}
	version, err := p.client.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("save the VM's state: %w", err)
	}
	vc, err := p.client.VMConfig(ctx)
	if err != nil {
		return "", fmt.Errorf("save the VM's state: %w", err)
	}
	var sp savedPaths
	if vc.Vsock != nil {
		sp.Vsock = vc.Vsock.UDSPath
	}
	for _, d := range vc.Drives {
		sp.Drives = append(sp.Drives, d.PathOnHost)
	}
	b, _ := json.Marshal(sp)
	state, mem := filepath.Join(dir, StateFileName), filepath.Join(dir, MemoryFileName)
	err = p.client.CreateSnapshot(ctx, SnapshotCreateParams{MemFilePath: mem, SnapshotPath: state, SnapshotType: "Full"})
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(dir, PathsFileName), b, atomicfile.Mode(0o600))
	}
	if err != nil {
		os.Remove(state)
		os.Remove(mem)
		return "", fmt.Errorf("save the VM's state to %s: %w", dir, err)
	}
	return strings.TrimPrefix(version, "v"), nil
}

var versionRe = regexp.MustCompile(`(?m)^Firecracker v(\d+\.\d+\.\d+\S*)`)

// parseVersion reads `firecracker --version`.
func parseVersion(out string) (string, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %.80q", out)
	}
	return m[1], nil
}

// BinaryVersion runs firecracker --version: "1.14.2".
func BinaryVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w; install Firecracker or set firecracker_bin", bin, err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, nil
}

// RestoreConfig is what Restore loads, besides the Config of the VM.
type RestoreConfig struct {
	Dir string // holds StateFileName and MemoryFileName
}

// StepLoadSnapshot is the step of Restore that loads the snapshot.
const StepLoadSnapshot = "load-snapshot"

// Restore spawns Firecracker for cfg and loads the snapshot in r.Dir into
// it, resuming the VM. The snapshot names the drives and the vsock socket
// relative to the VM's directory: cfg.Drives (linked in as DriveLinkName)
// must have the ids of the snapshot's drives (a tap is given by cfg.Net). On failure the process is killed and reaped and the
// error is a *StepError, as Start's.
func Restore(ctx context.Context, cfg Config, r RestoreConfig) (*Process, error) {
	if cfg.Jail != nil {
		return nil, fmt.Errorf("restore VM: %w", errJailed)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("restore VM: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &starter{cfg: cfg, t: cfg.Timeouts.withDefaults(), log: log.With("vm", cfg.Name),
		apiSock: APISocketPath(cfg.Dir), vsock: VsockPath(cfg.Dir)}
	// A fresh Firecracker and the snapshot loaded into it: the snapshot
	// holds the machine, boot source, drives, network and vsock, so none
	// of them is configured.
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{StepRemoveStaleSockets, s.removeStaleSockets},
		{StepCheckTap, s.checkTap},
		{StepLinkDrives, s.linkDrives},
		{StepSpawn, s.spawn},
		{StepWaitAPI, s.waitAPI},
		{StepLoadSnapshot, func(ctx context.Context) error { return s.proc.client.LoadSnapshot(ctx, loadParams(cfg, r)) }},
	}
	var trace []StepTrace
	for _, st := range steps {
		t0 := time.Now()
		err := ctx.Err()
		if err == nil {
			err = st.run(ctx)
		}
		trace = append(trace, StepTrace{Name: st.name, Duration: time.Since(t0)})
		if err != nil {
			pid := 0
			if s.proc != nil {
				pid = s.proc.PID
				if kerr := s.proc.kill(); kerr != nil {
					err = fmt.Errorf("%w; cleanup also failed: %v", err, kerr)
				}
			}
			return nil, &StepError{Step: st.name, Err: err, PID: pid, Steps: trace}
		}
	}
	s.proc.Steps = trace
	return s.proc, nil
}

// loadParams loads the snapshot in r and resumes the VM, on cfg's tap.
func loadParams(cfg Config, r RestoreConfig) SnapshotLoadParams {
	dir := r.Dir
	p := SnapshotLoadParams{
		SnapshotPath: filepath.Join(dir, StateFileName),
		MemBackend:   &MemoryBackend{BackendType: "File", BackendPath: filepath.Join(dir, MemoryFileName)},
		ResumeVM:     true,
	}
	if n := cfg.Net; n != nil {
		p.NetworkOverrides = []NetworkOverride{{IfaceID: IfaceID, HostDevName: n.Tap}}
	}
	return p
}

var (
	_ vmm.Snapshotter = machine{}
	_ vmm.Versioner   = (*Driver)(nil)
	_ vmm.SaveChecker = (*Driver)(nil)
)

// CanSave says whether a VM started now could be saved: not when it would
// run jailed, which is when bangerd is root and a jailer is there (a
// configuration the jailer does not fit would run unjailed after all; it
// is not told apart here).
func (d *Driver) CanSave() error {
	if os.Geteuid() != 0 {
		return nil
	}
	if d.cfg.JailerBin != "" {
		return errJailed
	}
	bin, err := FindBinary(d.cfg.Binary)
	if err != nil {
		return nil // no Firecracker: Start says so
	}
	if _, ok := JailerPath(bin); ok {
		return errJailed
	}
	return nil
}

// VMMVersion is BinaryVersion of the driver's firecracker.
func (d *Driver) VMMVersion(ctx context.Context) (string, error) {
	bin, err := FindBinary(d.cfg.Binary)
	if err != nil {
		return "", err
	}
	return BinaryVersion(ctx, bin)
}

func (m machine) Pause(ctx context.Context) error  { return m.p.Pause(ctx) }
func (m machine) Resume(ctx context.Context) error { return m.p.Resume(ctx) }

// SaveState writes a full snapshot into dir.
func (m machine) SaveState(ctx context.Context, dir string) (vmm.State, error) {
	var st vmm.State
	v, err := m.p.SaveState(ctx, dir)
	if err != nil {
		return st, err
	}
	st = vmm.State{VMM: vmm.Firecracker, VMMVersion: v, Files: []string{StateFileName, MemoryFileName, PathsFileName}}
	st.Bytes, err = vmm.FilesSize(dir, st.Files)
	return st, err
}

// restore is Start for a spec with Restore: unjailed only (for now).
func (d *Driver) restore(ctx context.Context, spec vmm.Spec, cfg Config) (vmm.Machine, vmm.Launch, error) {
	var l vmm.Launch
	v, err := BinaryVersion(ctx, cfg.Binary)
	if err != nil {
		return nil, l, err
	}
	if err := vmm.CheckRestore(spec.Restore.State, spec, vmm.Firecracker, v); err != nil {
		return nil, l, err
	}
	ids := make([]string, len(cfg.Drives))
	for i, d := range cfg.Drives {
		ids[i] = d.ID
	}
	if err := checkPaths(spec.Restore.Dir, relativePaths(ids), savedPaths{Vsock: VsockPath(spec.RunDir), Drives: spec.Drives}); err != nil {
		return nil, l, err
	}
	if c := spec.Credential; c != nil {
		j, _, err := decideJail(cfg, d.cfg.JailerBin, d.cfg.JailBase, c.Uid, c.Gid)
		if err != nil {
			return nil, l, err
		}
		if j != nil {
			return nil, l, fmt.Errorf("restore VM %s: %w", spec.Name, errJailed)
		}
	}
	l.AgentSocket, l.APISocket, l.Restored = VsockPath(spec.RunDir), APISocketPath(spec.RunDir), true
	p, err := Restore(ctx, cfg, RestoreConfig{Dir: spec.Restore.Dir})
	if err != nil {
		return nil, l, err
	}
	l.Notes = append(l.Notes, "resumed from the snapshot in "+spec.Restore.Dir)
	return machine{p, vsockLink(l.AgentSocket)}, l, nil
}
