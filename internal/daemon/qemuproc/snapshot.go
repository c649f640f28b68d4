package qemuproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/vmm"
)

// StateFileName is the migration stream SaveState writes in its
// directory: the guest's RAM and every device's state.
const StateFileName = "qemu.state"

// migrateFD is the name the state file's descriptor gets in QEMU (getfd).
const migrateFD = "banger-state"

// saveBandwidth lifts QEMU's migration bandwidth limit (32 MiB/s by
// default): the stream goes to a local file while the guest is paused.
const saveBandwidth = 1 << 40

// Pause stops the guest's vCPUs (QMP stop).
func (p *Process) Pause(ctx context.Context) error {
	return p.qmpDo(ctx, "pause the VM", func(q *QMP) error {
		_, err := q.Execute(ctx, "stop", nil)
		return err
	})
}

// Resume runs the guest again (QMP cont), after Pause or after SaveState.
func (p *Process) Resume(ctx context.Context) error {
	return p.qmpDo(ctx, "resume the VM", func(q *QMP) error {
		_, err := q.Execute(ctx, "cont", nil)
		return err
	})
}

func (p *Process) qmpDo(ctx context.Context, what string, do func(*QMP) error) error {
	if p.Exited() {
		return fmt.Errorf("%s: QEMU pid %d in %s has exited", what, p.PID, p.Dir)
	}
	q, err := p.QMP(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer q.Close()
	if err := do(q); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// SaveState migrates the paused guest into the file path (which must not
// exist), through a descriptor banger opens and hands to QEMU over the
// monitor socket: QEMU's sandbox forbids exec: migration and QEMU 7.2 has
// no file: one. It waits, within ctx, until the migration completed; the
// guest stays paused (Resume, or stop QEMU). The file is complete when
// SaveState returns nil and absent otherwise. version is QEMU's, as
// VMMVersion words it.
func (p *Process) SaveState(ctx context.Context, path string) (version string, err error) {
	err = p.qmpDo(ctx, "save the VM's state to "+path, func(q *QMP) error {
		st, err := q.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if st.Running {
			return errors.New("the VM is running; pause it first")
		}
		if version, err = queryVersion(ctx, q); err != nil {
			return err
		}
		return migrateToFile(ctx, q, path)
	})
	return version, err
}

// migrateToFile writes the migration stream into a new file at path.
func migrateToFile(ctx context.Context, q *QMP, path string) (err error) {
	tmp := path + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": saveBandwidth}); err != nil {
		return err
	}
	if err := q.sendFD(ctx, migrateFD, f); err != nil {
		return err
	}
	if _, err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + migrateFD}); err != nil {
		// The named descriptor stays in QEMU unless it is closed.
		_, _ = q.Execute(ctx, "closefd", map[string]any{"fdname": migrateFD})
		return err
	}
	if err := waitMigration(ctx, q); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sendFD hands f to QEMU under name: the descriptor rides with a blank
// (which QMP's parser skips) as SCM_RIGHTS, and getfd names it.
func (q *QMP) sendFD(ctx context.Context, name string, f *os.File) error {
	uc, ok := q.conn.(*net.UnixConn)
	if !ok {
		return errors.New("QMP getfd: the monitor connection is not a Unix socket")
	}
	q.mu.Lock()
	stop := q.bind(ctx)
	_, _, err := uc.WriteMsgUnix([]byte(" "), unix.UnixRights(int(f.Fd())), nil)
	stop()
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("QMP getfd: send the descriptor: %w", q.ctxErr(ctx, err))
	}
	_, err = q.Execute(ctx, "getfd", map[string]any{"fdname": name})
	return err
}

// migrationStatus is the part of query-migrate's reply banger reads.
type migrationStatus struct {
	Status      string `json:"status"`
	ErrorDesc   string `json:"error-desc"`
	TotalTimeMS int64  `json:"total-time"`
}

// waitMigration polls query-migrate until the outgoing migration ends.
func waitMigration(ctx context.Context, q *QMP) error {
	delay := 5 * time.Millisecond
	for {
		raw, err := q.Execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		var st migrationStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("QMP query-migrate: unexpected reply %.80q", raw)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("the migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_, _ = q.Execute(context.Background(), "migrate_cancel", nil)
			return fmt.Errorf("the migration did not complete (%q): %w", st.Status, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// queryVersion is the running QEMU's version, worded as `qemu --version`
// words it after "version ": "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)",
// the package's build included (a rebuild may change device state).
func queryVersion(ctx context.Context, q *QMP) (string, error) {
	raw, err := q.Execute(ctx, "query-version", nil)
	if err != nil {
		return "", err
	}
	var v struct {
		QEMU    struct{ Major, Minor, Micro int } `json:"qemu"`
		Package string                            `json:"package"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("QMP query-version: unexpected reply %.80q", raw)
	}
	ver := fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
	if pkg := strings.TrimSpace(v.Package); pkg != "" {
		ver += " (" + pkg + ")"
	}
	return ver, nil
}

var versionRe = regexp.MustCompile(`(?m)^QEMU emulator version (\S+(?: \([^)\n]*\))?)`)

// parseVersion reads `qemu-system-x86_64 --version`.
func parseVersion(out string) (string, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %.80q", out)
	}
	return m[1], nil
}

// BinaryVersion runs binary (DefaultBinary on PATH when empty) with
// --version.
func BinaryVersion(ctx context.Context, binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w; install the qemu-system-x86 package or set the path of qemu-system-x86_64", binary, err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	return v, nil
}

// fdIncoming is the descriptor of Config.Incoming, after every other.
func (p *plan) fdIncoming() int {
	if p.cfg.Net.Tap != nil {
		return p.fdTap() + 1
	}
	return p.fdTap()
}

// incomingArgs is -incoming for a Config that restores a saved state.
func (p *plan) incomingArgs() []string {
	if p.cfg.Incoming == "" {
		return nil
	}
	return []string{"-incoming", fmt.Sprintf("fd:%d", p.fdIncoming())}
}

// openIncoming opens Config.Incoming, when set, for QEMU to read.
func (p *plan) openIncoming() (*os.File, error) {
	if p.cfg.Incoming == "" {
		return nil, nil
	}
	f, err := os.Open(p.cfg.Incoming)
	if err != nil {
		return nil, fmt.Errorf("open the saved state: %w", err)
	}
	return f, nil
}

// finishIncoming looks at a QEMU loading a saved state (status st) and
// says whether the guest runs again. QEMU gives the guest the run state it
// was saved in, paused: once the load completed, it is resumed here. A load
// that fails makes QEMU exit.
func finishIncoming(ctx context.Context, dir string, st Status) (bool, error) {
	switch st.Status {
	case "running":
		return true, nil
	case "inmigrate":
		return false, nil
	case "paused":
	default:
		return false, fmt.Errorf("the VM is %q while loading its saved state", st.Status)
	}
	q, err := DialQMP(ctx, QMPSocketPath(dir))
	if err != nil {
		return false, err
	}
	defer q.Close()
	raw, err := q.Execute(ctx, "query-migrate", nil)
	if err != nil {
		return false, err
	}
	var m migrationStatus
	if err := json.Unmarshal(raw, &m); err != nil {
		return false, fmt.Errorf("QMP query-migrate: unexpected reply %.80q", raw)
	}
	if m.Status != "completed" {
		return false, fmt.Errorf("the VM is paused but loading its saved state is %q: %s", m.Status, m.ErrorDesc)
	}
	if _, err := q.Execute(ctx, "cont", nil); err != nil {
		return false, fmt.Errorf("resume the restored VM: %w", err)
	}
	return true, nil
}

var (
	_ vmm.Snapshotter = (*machine)(nil)
	_ vmm.Versioner   = (*Driver)(nil)
)

// VMMVersion is BinaryVersion of the driver's binary.
//
// It asks the binary once per file: asking forks a QEMU, and every `vm
// run` the warm pool serves asks (to match its snapshot) and so does the
// restore. A binary replaced in place (another path, size or modification
// time) is asked again.
func (d *Driver) VMMVersion(ctx context.Context) (string, error) {
	bin := d.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return BinaryVersion(ctx, d.Binary)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return BinaryVersion(ctx, d.Binary)
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano())
	d.versionMu.Lock()
	defer d.versionMu.Unlock()
	if d.versionKey == key {
		return d.version, nil
	}
	v, err := BinaryVersion(ctx, path)
	if err != nil {
		return "", err
	}
	d.versionKey, d.version = key, v
	return v, nil
}

func (m *machine) Pause(ctx context.Context) error  { return m.p.Pause(ctx) }
func (m *machine) Resume(ctx context.Context) error { return m.p.Resume(ctx) }

// SaveState writes dir/StateFileName.
func (m *machine) SaveState(ctx context.Context, dir string) (vmm.State, error) {
	var st vmm.State
	v, err := m.p.SaveState(ctx, filepath.Join(dir, StateFileName))
	if err != nil {
		return st, err
	}
	st = vmm.State{VMM: vmm.QEMU, VMMVersion: v, Emulated: m.p.Accel != AccelKVM, Files: []string{StateFileName}}
	st.Bytes, err = vmm.FilesSize(dir, st.Files)
	return st, err
}

// restore starts QEMU for spec from spec.Restore: under the accelerator
// the state was saved with, loading it through -incoming.
func (d *Driver) restore(ctx context.Context, spec vmm.Spec, cfg Config) (vmm.Machine, vmm.Launch, error) {
	var l vmm.Launch
	r := spec.Restore
	v, err := d.VMMVersion(ctx)
	if err != nil {
		return nil, l, err
	}
	if err := vmm.CheckRestore(r.State, spec, vmm.QEMU, v); err != nil {
		return nil, l, err
	}
	cfg.Accel = AccelKVM
	if r.State.Emulated {
		cfg.Accel = AccelTCG
	}
	cfg.Incoming = filepath.Join(r.Dir, StateFileName)
	p, err := Start(ctx, cfg)
	if err != nil {
		return nil, l, fmt.Errorf("restore QEMU from %s: %w", r.Dir, err)
	}
	l.AgentSocket, l.APISocket, l.Emulated, l.Restored = p.AgentSocket, p.QMPSocket, p.Accel != AccelKVM, true
	l.Notes = append(l.Notes, "resumed from the saved state in "+r.Dir)
	for _, f := range p.Forwards {
		if f.GuestPort == 22 {
			l.SSHPort = f.HostPort
		}
	}
	return &machine{p: p, link: vmm.NewMux(p.AgentSocket)}, l, nil
}

// driveLocking turns QEMU's image locks off. They are byte locks on the
// open file description, and a drive's descriptors come from an fdset that
// keeps its own copies open: when QEMU switches a drive between its
// read-only and read-write descriptor (as it does when a migration gives
// the images up and cont takes them back) the locks of the one it left
// stay and refuse the switch ("Failed to get shared "write" lock"). banger
// itself keeps a disk to one VM.
const driveLocking = ",file.locking=off"
