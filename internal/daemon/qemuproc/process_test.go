package qemuproc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/procwatch"
)

// fakeConfig is a Config that starts this test binary as a fake QEMU in the
// given mode (see fake_test.go).
func fakeConfig(t *testing.T, mode string) Config {
	t.Helper()
	t.Setenv(fakeEnv, mode)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		Binary: self, Dir: filepath.Join(dir, "vm"), Kernel: kernel, Accel: AccelTCG, TSCkHz: 1000,
		Net:      Net{User: &User{Forwards: []Forward{{GuestPort: 22}}}},
		Timeouts: Timeouts{Graceful: 300 * time.Millisecond, Powerdown: 300 * time.Millisecond, Quit: 300 * time.Millisecond, Kill: 30 * time.Second},
	}
}

// testCtx bounds a test so that a hang fails it instead of the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func startFake(t *testing.T, cfg Config) *Process {
	t.Helper()
	p, err := Start(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			p.signal(syscall.SIGKILL)
			<-p.Done()
		}
	})
	return p
}

func assertGone(t *testing.T, p *Process) {
	t.Helper()
	if !p.Exited() {
		t.Fatalf("pid %d still running", p.PID)
	}
	if err := syscall.Kill(p.PID, 0); err == nil && p.cmd == nil {
		if st, err := procwatch.ReadStat(p.PID); err == nil && st.StartTime == p.StartTime {
			t.Errorf("pid %d still exists", p.PID)
		}
	}
	for _, s := range []string{p.QMPSocket, p.AgentSocket} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", s, err)
		}
	}
}

func TestStartReportsProcess(t *testing.T) {
	cfg := fakeConfig(t, "obedient")
	cfg.Timeouts.Quit = time.Minute // generous: the fake obeys quit
	forwards := cfg.Net.User.Forwards
	p := startFake(t, cfg)
	if forwards[0].HostPort != 0 || forwards[0].HostAddr != "" {
		t.Errorf("Start changed the caller's forwards: %+v", forwards)
	}
	if p.Accel != AccelTCG || !strings.Contains(p.AccelReason, "tcg") {
		t.Errorf("accel %q (%s)", p.Accel, p.AccelReason)
	}
	if len(p.Forwards) != 1 || p.Forwards[0].HostPort == 0 || p.Forwards[0].HostAddr != "127.0.0.1" || p.Forwards[0].GuestPort != 22 {
		t.Errorf("forwards %+v: want a picked host port on 127.0.0.1 to guest 22", p.Forwards)
	}
	st, err := procwatch.ReadStat(p.PID)
	if err != nil || st.StartTime != p.StartTime {
		t.Errorf("start time %d, /proc says %d (%v)", p.StartTime, st.StartTime, err)
	}
	if p.AgentSocket != filepath.Join(cfg.Dir, "agent.sock") {
		t.Errorf("agent socket %q", p.AgentSocket)
	}
	args, _ := procwatch.Proc{PID: p.PID}.Cmdline()
	if !strings.Contains(strings.Join(args, " "), "tsc_early_khz=1000") {
		t.Errorf("TSC not on the kernel command line: %q", args)
	}
	// The process has its own process group.
	if pgid, err := syscall.Getpgid(p.PID); err != nil || pgid != p.PID {
		t.Errorf("pgid %d (%v), want %d", pgid, err, p.PID)
	}
	// A second Start in the same directory finds the live monitor and
	// refuses, leaving the first VM's sockets alone.
	cfg2 := cfg
	if _, err := Start(testCtx(t), cfg2); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("second Start in the same dir: %v", err)
	}
	if _, err := os.Stat(p.QMPSocket); err != nil {
		t.Fatalf("refused Start touched the running VM's socket: %v", err)
	}
	// No graceful hook: powerdown is ignored, quit works.
	if err := p.Stop(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	if p.StoppedBy() != StopQuit {
		t.Errorf("stopped by %q, want quit", p.StoppedBy())
	}
	assertGone(t, p)
	if err := p.Wait(testCtx(t)); err != nil {
		t.Errorf("exit status after quit: %v", err)
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	p := startFake(t, fakeConfig(t, "stubborn"))
	hookCalled := false
	hook := func(ctx context.Context) error {
		hookCalled = true
		if _, ok := ctx.Deadline(); !ok {
			t.Error("graceful hook got no deadline")
		}
		return errors.New("agent unreachable")
	}
	if err := p.Stop(testCtx(t), hook); err != nil {
		t.Fatal(err)
	}
	if !hookCalled {
		t.Error("graceful hook not called")
	}
	if p.StoppedBy() != StopKill {
		t.Errorf("stopped by %q, want kill", p.StoppedBy())
	}
	assertGone(t, p)
	// Stopping again is a no-op.
	if err := p.Stop(testCtx(t), hook); err != nil {
		t.Fatal(err)
	}
}

func TestStopCancelledGoesStraightToKill(t *testing.T) {
	p := startFake(t, fakeConfig(t, "stubborn"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	if err := p.Stop(ctx, func(context.Context) error { called = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if called || p.StoppedBy() != StopKill {
		t.Errorf("hook called %v, stopped by %q; want no hook and kill", called, p.StoppedBy())
	}
	assertGone(t, p)
}

func TestStartFailureNamesStepAndCleansUp(t *testing.T) {
	cfg := fakeConfig(t, "fail")
	_, err := Start(testCtx(t), cfg)
	if err == nil {
		t.Fatal("Start succeeded with a failing QEMU")
	}
	msg := err.Error()
	for _, want := range []string{"wait for the QMP monitor", "QEMU exited", "Could not open '/nonexistent'", cfg.Dir} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "warning:") {
		t.Errorf("error repeats QEMU's warnings: %s", msg)
	}
	for _, s := range []string{QMPSocketPath(cfg.Dir), AgentSocketPath(cfg.Dir)} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind", s)
		}
	}
}

func TestStartSilentMonitorTimesOut(t *testing.T) {
	cfg := fakeConfig(t, "silent")
	cfg.StartTimeout = 300 * time.Millisecond
	_, err := Start(testCtx(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "wait for the QMP monitor: no answer") {
		t.Fatalf("Start with a silent QEMU: %v", err)
	}
	// The fake was killed and reaped: its PID is not a live process.
	pids := launches(t, cfg.Dir)
	if len(pids) != 1 {
		t.Fatalf("launched %d times, want 1", len(pids))
	}
	if err := syscall.Kill(pids[0], 0); err == nil {
		t.Errorf("silent QEMU pid %d still exists after the failed Start", pids[0])
	}
}

func TestStartRetriesPortConflicts(t *testing.T) {
	cfg := fakeConfig(t, "portbusy")
	_, err := Start(testCtx(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "host forwarding rule") {
		t.Fatalf("Start: %v", err)
	}
	if n := len(launches(t, cfg.Dir)); n != 3 {
		t.Errorf("launched %d times, want 3 (picked ports are retried)", n)
	}
	// A fixed port is the caller's choice: no retry.
	cfg = fakeConfig(t, "portbusy")
	cfg.Net.User.Forwards[0].HostPort = 2222
	if _, err := Start(testCtx(t), cfg); err == nil {
		t.Fatal("Start succeeded")
	}
	if n := len(launches(t, cfg.Dir)); n != 1 {
		t.Errorf("launched %d times with a fixed port, want 1", n)
	}
}

func TestStartBadConfigChangesNothing(t *testing.T) {
	cfg := fakeConfig(t, "obedient")
	cfg.Accel = "hvf"
	_, err := Start(testCtx(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "check the configuration") {
		t.Fatalf("Start: %v", err)
	}
	if _, err := os.Stat(cfg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bad config created %s", cfg.Dir)
	}
	cfg.Accel = AccelTCG
	cfg.Binary = "/nonexistent/qemu"
	if _, err := Start(testCtx(t), cfg); err == nil || !strings.Contains(err.Error(), "qemu-system-x86") {
		t.Fatalf("Start with a missing binary: %v", err)
	}
}

func TestAdopt(t *testing.T) {
	cfg := fakeConfig(t, "stubborn")
	cfg.Net.User.Forwards = []Forward{{HostPort: 0, GuestPort: 22}, {HostAddr: "127.0.0.1", HostPort: 0, GuestPort: 80}}
	orig := startFake(t, cfg)

	if _, err := Adopt(orig.PID, orig.StartTime+1, cfg.Dir); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt with a wrong start time: %v", err)
	}
	if _, err := Adopt(orig.PID, orig.StartTime, t.TempDir()); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt with another dir: %v", err)
	}
	if _, err := Adopt(os.Getpid(), mustStartTime(t, os.Getpid()), cfg.Dir); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt of a process that is not QEMU: %v", err)
	}

	p, err := Adopt(orig.PID, orig.StartTime, cfg.Dir+"/")
	if err != nil {
		t.Fatal(err)
	}
	if p.Accel != AccelTCG || len(p.Forwards) != 2 || p.Forwards[0] != orig.Forwards[0] || p.Forwards[1] != orig.Forwards[1] {
		t.Errorf("adopted %q %+v, started %q %+v", p.Accel, p.Forwards, orig.Accel, orig.Forwards)
	}
	if p.Exited() {
		t.Fatal("adopted process reported exited")
	}
	p.Timeouts = orig.Timeouts
	if err := p.Stop(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	if p.StoppedBy() != StopKill {
		t.Errorf("stopped by %q", p.StoppedBy())
	}
	<-orig.Done()
	assertGone(t, p)
	if _, err := Adopt(orig.PID, orig.StartTime, cfg.Dir); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt after exit: %v", err)
	}
}

func mustStartTime(t *testing.T, pid int) uint64 {
	st, err := procwatch.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.StartTime
}

func launches(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "launches"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		for _, c := range f {
			pid = pid*10 + int(c-'0')
		}
		pids = append(pids, pid)
	}
	return pids
}

// A QEMU its user may not run is refused with what to do about it, and
// leaves no socket behind.
func TestStartAsUserWhoCannotRunQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start QEMU as another user")
	}
	cfg := fakeConfig(t, "obedient")
	cfg.Credential = &syscall.Credential{Uid: testUID, Gid: testUID}
	// A copy of the fake in a directory only root can enter.
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.Binary)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Binary = filepath.Join(private, "qemu")
	if err := os.WriteFile(cfg.Binary, b, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Start(testCtx(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot run") || !strings.Contains(err.Error(), "launch QEMU") {
		t.Fatalf("Start: %v", err)
	}
	for _, s := range []string{QMPSocketPath(cfg.Dir), AgentSocketPath(cfg.Dir)} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind", s)
		}
	}
}
