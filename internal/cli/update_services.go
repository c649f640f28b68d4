package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/daemon/privhelper"
	"banger/internal/progress"
	"banger/internal/rpc"
	"banger/internal/update"
)

// Systemd units an update restarts.
const (
	helperUnit = "banger-helper.service" // system unit, root
	daemonUnit = "bangerd.service"       // user unit (packaging/systemd)
)

// updateServices is update.Services on this host: bangerd through the
// CLI's daemon control (or `systemctl --user` when its user unit runs it),
// the helper through systemctl and its hello.
type updateServices struct {
	a          *app
	in         *update.Install
	systemctl  string // "" when systemctl is not installed
	helperSock string
	userUnit   bool      // the running bangerd is the main process of bangerd.service
	sudo       *sudoUser // set when root runs the update through sudo
}

var _ update.Services = (*updateServices)(nil)

func (a *app) newUpdateServices(in *update.Install) (*updateServices, error) {
	l, err := a.config()
	if err != nil {
		return nil, err
	}
	s := &updateServices{a: a, in: in, helperSock: l.Config.HelperSocket}
	if p, err := exec.LookPath("systemctl"); err == nil {
		s.systemctl = p
	}
	if s.sudo, err = sudoUserOf(a.getenv); err != nil {
		return nil, err
	}
	return s, nil
}

// sudoUser is the user who ran `sudo banger update`. Their bangerd, not
// root's, is the one that talks to the helper: it is stopped, started and
// checked as them, through the install's banger (`banger daemon ...`).
type sudoUser struct {
	name string
	cred *syscall.Credential
	env  []string
	home string
}

// sudoUserOf returns the user behind sudo (SUDO_UID), or nil when this
// process is not root or was not started by sudo from another user.
func sudoUserOf(getenv func(string) string) (*sudoUser, error) {
	uidText := getenv("SUDO_UID")
	if os.Geteuid() != 0 || uidText == "" || uidText == "0" {
		return nil, nil
	}
	u, err := user.LookupId(uidText)
	if err != nil {
		return nil, fmt.Errorf("find the user who ran sudo (SUDO_UID %s): %w", uidText, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s has a uid or gid that is not a number", u.Username)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	env := []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username, "PATH=" + os.Getenv("PATH"), "NO_COLOR=1", updateLockEnv + "=1"}
	if run := "/run/user/" + u.Uid; isDir(run) {
		env = append(env, "XDG_RUNTIME_DIR="+run)
	}
	return &sudoUser{name: u.Username, cred: cred, env: env, home: u.HomeDir}, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// asUser runs the install's banger as the sudo user and returns its
// stdout and exit code.
func (s *updateServices) asUser(ctx context.Context, args ...string) (string, int, error) {
	cmd := exec.CommandContext(ctx, s.in.Path("banger"), args...)
	cmd.Env, cmd.Dir = s.sudo.env, s.sudo.home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.sudo.cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode(), fmt.Errorf("banger %s as %s: %s", strings.Join(args, " "), s.sudo.name, strings.TrimSpace(errb.String()))
	}
	if err != nil {
		return "", -1, fmt.Errorf("run banger %s as %s: %w", strings.Join(args, " "), s.sudo.name, err)
	}
	return out.String(), 0, nil
}

// userDaemon is `banger daemon status -o json` as the sudo user.
func (s *updateServices) userDaemon(ctx context.Context) (rpc.VersionInfo, bool, error) {
	out, code, err := s.asUser(ctx, "daemon", "status", "-o", "json")
	if code == 3 {
		return rpc.VersionInfo{}, false, nil
	}
	if err != nil {
		return rpc.VersionInfo{}, false, err
	}
	var st struct {
		Running bool            `json:"running"`
		Daemon  rpc.VersionInfo `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return rpc.VersionInfo{}, false, fmt.Errorf("read `banger daemon status -o json` of %s: %w", s.sudo.name, err)
	}
	return st.Daemon, st.Running, nil
}

// daemonInfo says which bangerd runs now, for the report.
func (s *updateServices) daemonInfo(ctx context.Context) (rpc.VersionInfo, bool) {
	if s.sudo != nil {
		v, ok, err := s.userDaemon(ctx)
		return v, ok && err == nil
	}
	c, v, err := s.a.probe(ctx)
	if err != nil {
		return v, false
	}
	c.Close()
	return v, true
}

func (s *updateServices) run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, s.systemctl, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// DaemonRunning asks bangerd's socket, and notes whether bangerd.service
// (a user unit) is what runs it, so that it is stopped and started
// through systemd and not behind its back.
func (s *updateServices) DaemonRunning(ctx context.Context) (bool, error) {
	if s.sudo != nil {
		_, ok, err := s.userDaemon(ctx)
		return ok, err
	}
	c, v, err := s.a.probe(ctx)
	var unreachable *rpc.DaemonUnreachableError
	if errors.As(err, &unreachable) {
		if s.userUnit {
			// A unit started by this update that hangs in its start
			// answers nothing but still runs: it must be stopped.
			out, _ := exec.CommandContext(ctx, s.systemctl, "--user", "is-active", daemonUnit).Output()
			st := strings.TrimSpace(string(out))
			return st == "active" || st == "activating", nil
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.Close()
	if s.systemctl != "" {
		out, err := s.run(ctx, "--user", "show", "--property=MainPID", "--value", daemonUnit)
		if pid, perr := strconv.Atoi(out); err == nil && perr == nil && pid == v.PID && pid > 0 {
			s.userUnit = true
		}
	}
	return true, nil
}

func (s *updateServices) StopDaemon(ctx context.Context) error {
	if s.sudo != nil {
		_, _, err := s.asUser(ctx, "daemon", "stop")
		return err
	}
	if s.userUnit {
		_, err := s.run(ctx, "--user", "stop", daemonUnit)
		return err
	}
	_, err := s.a.stopDaemon(ctx)
	return err
}

// HelperActive is `systemctl is-active banger-helper.service`; without
// systemctl there is no unit to restart.
func (s *updateServices) HelperActive(ctx context.Context) (bool, error) {
	if s.systemctl == "" {
		return false, nil
	}
	out, err := exec.CommandContext(ctx, s.systemctl, "is-active", helperUnit).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return false, nil // inactive, failed or unknown: not running
		}
		return false, fmt.Errorf("systemctl is-active %s: %w", helperUnit, err)
	}
	return strings.TrimSpace(string(out)) == "active", nil
}

func (s *updateServices) RestartHelper(ctx context.Context) error {
	_, err := s.run(ctx, "restart", helperUnit)
	return err
}

// HelperVersion sends the helper a hello and returns its build version.
// The protocol is not checked here (this CLI is the old build; the helper
// speaks the new protocol): the version must be the new one.
func (s *updateServices) HelperVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	r, err := privhelper.Client{Socket: s.helperSock}.Do(ctx, privhelper.Request{Op: privhelper.OpHello})
	if err != nil {
		return "", err
	}
	return r.Version, nil
}

// OtherDaemons lists the bangerds of the install run by other users than
// the one whose bangerd the update restarts (the sudo user, or this
// process's), root's excepted: root's bangerd does not use the helper.
func (s *updateServices) OtherDaemons(context.Context) ([]update.Proc, error) {
	own := os.Geteuid()
	if s.sudo != nil {
		own = int(s.sudo.cred.Uid)
	}
	var out []update.Proc
	for _, p := range update.ProcsOf("/proc", s.in.Path("bangerd")) {
		if p.UID != own && p.UID != 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// DaemonPID is the pid the answering bangerd reports, 0 when none answers.
func (s *updateServices) DaemonPID(ctx context.Context) (int, error) {
	if s.sudo != nil {
		v, ok, err := s.userDaemon(ctx)
		if err != nil || !ok {
			return 0, err
		}
		return v.PID, nil
	}
	c, v, err := s.a.probe(ctx)
	var unreachable *rpc.DaemonUnreachableError
	if errors.As(err, &unreachable) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	c.Close()
	return v.PID, nil
}

// StartDaemon starts the install's bangerd (through its user unit when
// that ran it) and returns the version it answers with.
func (s *updateServices) StartDaemon(ctx context.Context) (string, error) {
	if s.sudo != nil {
		if _, _, err := s.asUser(ctx, "daemon", "start"); err != nil {
			return "", err
		}
		v, ok, err := s.userDaemon(ctx)
		if err == nil && !ok {
			err = fmt.Errorf("bangerd of %s started but does not answer", s.sudo.name)
		}
		return v.Version, err
	}
	if !s.userUnit {
		s.a.daemonBin, s.a.killHungDaemon = s.in.Path("bangerd"), true
		c, v, err := s.a.startDaemon(ctx)
		if err != nil {
			return "", err
		}
		c.Close()
		return v.Version, nil
	}
	if _, err := s.run(ctx, "--user", "start", daemonUnit); err != nil {
		return "", fmt.Errorf("%w (see `journalctl --user -u %s`)", err, daemonUnit)
	}
	for {
		c, v, err := s.a.probe(ctx)
		if err == nil {
			c.Close()
			return v.Version, nil
		}
		select {
		case <-ctx.Done():
			logPath, _ := s.a.logPath()
			return "", fmt.Errorf("%s started but bangerd did not answer: %w (see `journalctl --user -u %s`)%s", daemonUnit, err, daemonUnit, logTail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// updateLockEnv, set in the environment of the `banger daemon start` that
// a `sudo banger update` runs as the user, says that the update holding
// the install's lock is the one starting bangerd.
const updateLockEnv = "BANGER_UPDATE_STARTS_DAEMON"

// updateWait bounds how long a daemon start waits for an update of its
// install to finish.
var updateWait = 2 * time.Minute

// waitForUpdate holds a shared lock on the directory of bin while bangerd
// starts. `banger update` holds it exclusively for its whole run: a
// bangerd started meanwhile (by another banger command) could be the new
// one and meet the helper of the old build before the update restarts it,
// or an old one that the update, not seeing it yet, leaves running beside
// a restarted helper. So a start waits for the update to finish (and waited
// says so: the update may have started bangerd itself). Anyone who can
// read the directory can flock it, so a held lock alone is not waited on:
// the install's journal (which only its owner or root can write) must
// also say that an update is under way. The update's own starts do not
// wait. A directory that cannot be opened is not waited on.
func (a *app) waitForUpdate(ctx context.Context, bin string) (release func(), waited bool, err error) {
	none := func() {}
	if a.killHungDaemon || a.getenv(updateLockEnv) != "" {
		return none, false, nil
	}
	dir := filepath.Dir(bin)
	d, err := os.Open(dir)
	if err != nil {
		return none, false, nil
	}
	deadline := time.NewTimer(updateWait)
	defer deadline.Stop()
	for {
		err := syscall.Flock(int(d.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		switch {
		case err == nil:
			return func() { d.Close() }, waited, nil
		case !errors.Is(err, syscall.EWOULDBLOCK):
			d.Close()
			return none, waited, nil
		}
		if j, err := (&update.Install{Dir: dir}).ReadJournal(); err != nil || !j.UnderWay() {
			d.Close()
			return none, waited, nil
		}
		if !waited && !a.quiet {
			fmt.Fprintf(a.stderr, "Waiting for `banger update` in %s to finish before starting bangerd...\n", dir)
		}
		waited = true
		select {
		case <-ctx.Done():
			d.Close()
			return none, true, ctx.Err()
		case <-deadline.C:
			d.Close()
			return none, true, fmt.Errorf("bangerd was not started: `banger update` has been replacing it in %s for %s; try again when it is done", dir, updateWait)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// downloadReporter renders a download's progress.Reporter calls with the
// CLI's operation renderers: a live bar on a terminal, plain lines
// otherwise, nothing with --quiet.
type downloadReporter struct {
	r  renderer
	op rpc.Operation
}

func newDownloadReporter(a *app, name string) *downloadReporter {
	return &downloadReporter{r: newRenderer(a), op: rpc.Operation{ID: "update", Kind: "download", Target: name, State: rpc.StateRunning}}
}

func (d *downloadReporter) Phase(name string) {
	d.op.Phase, d.op.Done, d.op.Total, d.op.Unit = name, 0, 0, progress.None
	d.r.update(d.op)
}

func (d *downloadReporter) SetTotal(total int64, unit progress.Unit) {
	d.op.Total, d.op.Unit = total, unit
	if d.op.Phase == "" {
		d.op.Phase = "downloading"
	}
	d.r.update(d.op)
}

func (d *downloadReporter) Add(n int64) {
	d.op.Done += n
	if d.op.Phase == "" {
		d.op.Phase, d.op.Unit = "downloading", progress.Bytes
	}
	d.r.update(d.op)
}

func (d *downloadReporter) finish(err error) {
	d.op.State = rpc.StateSucceeded
	if err != nil {
		d.op.State, d.op.Error = rpc.StateFailed, err.Error()
	}
	d.r.finish(d.op)
}
