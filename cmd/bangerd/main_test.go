package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/daemon/privhelper"
)

// TestMain lets the test binary be bangerd: with BANGERD_TEST_MAIN set it
// runs main with the binary's arguments.
func TestMain(m *testing.M) {
	if os.Getenv("BANGERD_TEST_MAIN") != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

// brokenDaemonEnv is an environment in which the daemon cannot start: its
// config file is not TOML. Its state, runtime and config dirs are empty
// directories of the test, so that anything written there shows.
func brokenDaemonEnv(t *testing.T, dir string) (env []string, dirs []string) {
	t.Helper()
	for _, d := range []string{"state", "run", "config", "home"} {
		p := filepath.Join(dir, d)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, p)
	}
	cfg := filepath.Join(dir, "config", "config.toml")
	if err := os.WriteFile(cfg, []byte("state_dir = [this is not toml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env = []string{"BANGERD_TEST_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=" + dirs[3],
		"XDG_STATE_HOME=" + dirs[0], "XDG_RUNTIME_DIR=" + dirs[1], "XDG_CONFIG_HOME=" + dirs[2], "BANGER_CONFIG=" + cfg}
	return env, dirs
}

// openFiles lists what the process pid has open, by the kernel's names.
func openFiles(t *testing.T, pid int) []string {
	t.Helper()
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil {
			out = append(out, target)
		}
	}
	return out
}

// TestHelperStartsNothingOfTheDaemon runs `bangerd helper` in an
// environment where the daemon itself refuses to start (a config file that
// does not parse): the helper must serve all the same, answer hello with
// this build, hold no file open (no store, lock or log), write nothing in
// the state, runtime or config dirs, and stop cleanly on SIGTERM.
func TestHelperStartsNothingOfTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: `bangerd helper` refuses to run as another user")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bgd") // short: a socket's path is bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	env, dirs := brokenDaemonEnv(t, dir)

	// The premise: in this environment bangerd, the daemon, does not start.
	daemon := exec.Command(exe)
	daemon.Env = env
	out, err := daemon.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "config") {
		t.Fatalf("bangerd with a broken config: %v, want exit 1 naming the config\n%s", err, out)
	}

	sock := filepath.Join(dir, "helper", "helper.sock")
	allow := filepath.Join(dir, "helper-users")
	if err := os.WriteFile(allow, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bound only so that a broken helper fails the test instead of
	// hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := startHelper(t, exe, env, "--socket", sock, "--allow", allow)
	hello := h.hello(ctx, t, sock)
	if hello.Version != buildinfo.Version || hello.Protocol != privhelper.ProtocolVersion {
		t.Errorf("hello = %+v, want build %s, protocol %d", hello, buildinfo.Version, privhelper.ProtocolVersion)
	}
	for _, f := range openFiles(t, h.cmd.Process.Pid) {
		// The Go runtime keeps the cgroup's CPU limits open to size
		// GOMAXPROCS; anything else is the process's own doing.
		if strings.HasPrefix(f, "/") && f != os.DevNull && !strings.HasPrefix(f, "/sys/fs/cgroup/") {
			t.Errorf("bangerd helper holds %s open; it should hold sockets only", f)
		}
	}
	// Only the config file the test wrote is there.
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() != "config.toml" {
				t.Errorf("bangerd helper wrote %s in %s", e.Name(), d)
			}
		}
	}

	h.stop(ctx, t)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after the helper stopped: %v", err)
	}
}

// lockedBuffer is a process's output, read while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// helperProc is a `bangerd helper` the test started; it is killed, if
// still running, when the test ends.
type helperProc struct {
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's answer, once done is closed
}

func startHelper(t *testing.T, exe string, env []string, args ...string) *helperProc {
	t.Helper()
	h := &helperProc{cmd: exec.Command(exe, append([]string{"helper"}, args...)...), logs: &lockedBuffer{}, done: make(chan struct{})}
	h.cmd.Env = env
	h.cmd.Stdout, h.cmd.Stderr = h.logs, h.logs
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { h.err = h.cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			_ = h.cmd.Process.Kill()
			<-h.done
		}
	})
	return h
}

// hello waits until the helper answers hello on sock, and returns its
// answer.
func (h *helperProc) hello(ctx context.Context, t *testing.T, sock string) privhelper.Response {
	t.Helper()
	c := privhelper.Client{Socket: sock}
	for {
		r, err := c.Hello(ctx)
		if err == nil {
			return r
		}
		select {
		case <-h.done:
			t.Fatalf("bangerd helper exited (%v) before it answered: %v\n%s", h.err, err, h.logs)
		case <-ctx.Done():
			t.Fatalf("bangerd helper never answered: %v\n%s", err, h.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and wants a clean exit.
func (h *helperProc) stop(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.done:
		if h.err != nil {
			t.Fatalf("bangerd helper after SIGTERM: %v\n%s", h.err, h.logs)
		}
	case <-ctx.Done():
		t.Fatalf("bangerd helper did not stop on SIGTERM\n%s", h.logs)
	}
}
