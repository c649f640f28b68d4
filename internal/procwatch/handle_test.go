package procwatch

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// sleeper starts `sleep 1000` as a plain child (not through Start); the
// cleanup kills and reaps it.
func sleeper(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary on PATH")
	}
	cmd := exec.Command("sleep", append([]string{"1000"}, args...)...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func waitDone(t *testing.T, h *Handle, what string) {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Done did not close within 10s", what)
	}
}

func TestOpenSignalDone(t *testing.T) {
	cmd := sleeper(t, t.TempDir())
	pid := cmd.Process.Pid
	st, err := ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	// A pid whose process started at another time is someone else: that
	// is how a reused pid looks.
	if _, err := Open(pid, st.StartTime+1); !errors.Is(err, ErrReused) {
		t.Errorf("Open with a wrong start time = %v, want ErrReused", err)
	}
	if _, err := Open(0, 1); err == nil {
		t.Error("Open(0) succeeded")
	}
	h, err := Open(pid, st.StartTime)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer h.Close()
	if h.PID() != pid || h.StartTime() != st.StartTime || h.Exited() {
		t.Fatalf("handle %d/%d exited=%v, want %d/%d running", h.PID(), h.StartTime(), h.Exited(), pid, st.StartTime)
	}
	select {
	case <-h.Done():
		t.Fatal("Done closed while the process runs")
	case <-time.After(100 * time.Millisecond):
	}
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	// Done fires at exit, before the parent (this test) has reaped it.
	waitDone(t, h, "after SIGTERM")
	if err := cmd.Wait(); err == nil || cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("the child ended with %v, want SIGTERM", err)
	}
	if err := h.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("Signal after exit = %v, want nil", err)
	}
	if h.ExitErr() != nil {
		t.Errorf("ExitErr of an opened process = %v, want nil", h.ExitErr())
	}
	if _, err := Open(pid, st.StartTime); !errors.Is(err, ErrGone) && !errors.Is(err, ErrReused) {
		t.Errorf("Open after exit = %v, want ErrGone", err)
	}
}

func TestOpenZombieIsGone(t *testing.T) {
	cmd := sleeper(t, t.TempDir())
	st, _ := ReadStat(cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for Running(cmd.Process.Pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Not reaped yet: a zombie with the right start time.
	if _, err := Open(cmd.Process.Pid, st.StartTime); !errors.Is(err, ErrGone) {
		t.Errorf("Open of a zombie = %v, want ErrGone", err)
	}
}

func TestCloseStopsWatching(t *testing.T) {
	cmd := sleeper(t, t.TempDir())
	st, _ := ReadStat(cmd.Process.Pid)
	h, err := Open(cmd.Process.Pid, st.StartTime)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the watcher did not stop")
	}
	if err := h.Signal(syscall.SIGKILL); !errors.Is(err, ErrClosed) {
		t.Errorf("Signal after Close = %v, want ErrClosed", err)
	}
	if !Running(cmd.Process.Pid) {
		t.Error("Close ended the process")
	}
	if h.Exited() {
		t.Error("Done closed by Close")
	}
	h.Close() // twice is fine
}

func TestStartHoldsAndReapsChild(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary on PATH")
	}
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Signal(syscall.SIGKILL); <-h.Done() })
	st, err := ReadStat(h.PID())
	if err != nil || st.StartTime != h.StartTime() || h.PID() != cmd.Process.Pid {
		t.Fatalf("handle %d/%d, /proc says %+v (%v)", h.PID(), h.StartTime(), st, err)
	}
	if pgid, _ := syscall.Getpgid(h.PID()); pgid != h.PID() {
		t.Errorf("Start dropped the caller's SysProcAttr: pgid %d", pgid)
	}
	if cmd.SysProcAttr.PidFD == nil || *cmd.SysProcAttr.PidFD < 0 {
		t.Error("no pidfd from clone")
	}
	h.Close() // a child's watcher keeps running
	if err := h.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	waitDone(t, h, "child after SIGTERM")
	var ee *exec.ExitError
	if err := h.ExitErr(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("ExitErr = %v, want killed by SIGTERM", err)
	}
	// Reaped: no zombie is left.
	if err := syscall.Kill(h.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		if st, err := ReadStat(h.PID()); err == nil && st.StartTime == h.StartTime() {
			t.Errorf("child %d still in the process table: %+v", h.PID(), st)
		}
	}
}

func TestStartFailure(t *testing.T) {
	cmd := exec.Command("/nonexistent/" + t.Name())
	if _, err := Start(cmd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start of a missing binary = %v", err)
	}
}

// held counts the pidfds this test process holds of pid (all for 0).
func held(t *testing.T, pid int) int {
	t.Helper()
	n, err := PidfdsHeld(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestHandlesReleasePidfds(t *testing.T) {
	base := held(t, 0)
	cmd := sleeper(t, t.TempDir())
	pid := cmd.Process.Pid
	st, _ := ReadStat(pid)
	before := held(t, pid) // the os package may hold one of its own child
	h, err := Open(pid, st.StartTime)
	if err != nil {
		t.Fatal(err)
	}
	if n := held(t, pid); n != before+1 {
		t.Errorf("an open Handle: %d pidfds of pid %d, want %d", n, pid, before+1)
	}
	h.Close()
	keep := []*Handle{h} // alive to the end: no finalizer may close a pidfd
	if n := held(t, pid); n != before {
		t.Errorf("a closed Handle: %d pidfds of pid %d, want %d", n, pid, before)
	}
	// Not closed, but exited: the watcher releases the pidfd itself.
	h, err = Open(pid, st.StartTime)
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, h)
	h.Signal(syscall.SIGKILL)
	waitDone(t, h, "after SIGKILL")
	cmd.Wait()
	c := exec.Command("sleep", "1000")
	h, err = Start(c)
	if err != nil {
		t.Fatal(err)
	}
	keep = append(keep, h)
	if held(t, c.Process.Pid) < 1 {
		t.Errorf("a started child is not held by a pidfd")
	}
	h.Signal(syscall.SIGKILL)
	waitDone(t, h, "child after SIGKILL")
	// The watcher closes after closing done: give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for held(t, 0) != base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := held(t, 0); n != base {
		t.Errorf("%d pidfds held after every process exited, %d before", n, base)
	}
	runtime.KeepAlive(keep)
}
