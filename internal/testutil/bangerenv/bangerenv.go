package bangerenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binary is one of banger's programs and how it is built.
type Binary struct {
	Name   string // file name in the bin dir
	Pkg    string // import path of its main package
	Static bool   // built with CGO_ENABLED=0 (the guest agent, copied into guests)
}

// The three programs.
var (
	CLI    = Binary{"banger", "banger/cmd/banger", false}
	Daemon = Binary{"bangerd", "banger/cmd/bangerd", false}
	Agent  = Binary{"banger-vsock-agent", "banger/cmd/banger-vsock-agent", true}
)

// Build builds bins (all three when none are named) into dir with the go
// tool on PATH, as the Makefile does.
func Build(dir string, bins ...Binary) error {
	if len(bins) == 0 {
		bins = []Binary{CLI, Daemon, Agent}
	}
	for _, b := range bins {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.Name), b.Pkg)
		cgo := "1"
		if b.Static {
			cgo = "0"
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s from %s: %v\n%s", b.Name, b.Pkg, err, out)
		}
	}
	return nil
}

// Need returns why a suite cannot run when one of tools is not on PATH
// ("qemu-system-x86_64 is not installed"), or "".
func Need(tools ...string) string {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return t + " is not installed"
		}
	}
	return ""
}

// Env is one isolated banger installation.
type Env struct {
	Bin     string // the directory holding the binaries
	Home    string // HOME: holds .config/banger/config.toml and the state dir
	State   string // <Home>/.local/state/banger
	Runtime string // XDG_RUNTIME_DIR: a short path, since it holds Unix sockets

	// ExtraEnv is added to the environment of every command.
	ExtraEnv []string
	// Wrap, when set, turns the argv of banger into the argv run instead
	// (to run it in a network namespace, as another user).
	Wrap func(argv []string) []string
	// Timeout bounds each command; zero means 10 minutes.
	Timeout time.Duration
}

// New makes an Env whose home is home, with config as its config.toml.
// runtime must exist already: callers make it short (testutil.ShortDir,
// os.MkdirTemp) and remove it.
func New(bin, home, runtime, config string) (*Env, error) {
	cfgDir := filepath.Join(home, ".config", "banger")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		return nil, fmt.Errorf("make the config dir of a test env: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("write the config of a test env: %w", err)
	}
	return &Env{
		Bin:     bin,
		Home:    home,
		State:   filepath.Join(home, ".local", "state", "banger"),
		Runtime: runtime,
	}, nil
}

// Environ is this process's environment with banger's own variables
// replaced by the env's.
func (e *Env) Environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "BANGER_CONFIG":
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "HOME="+e.Home, "XDG_RUNTIME_DIR="+e.Runtime, "NO_COLOR=1")
	return append(out, e.ExtraEnv...)
}

// Command is banger with args in the env, wrapped by Wrap when it is set.
func (e *Env) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{filepath.Join(e.Bin, "banger")}, args...)
	if e.Wrap != nil {
		argv = e.Wrap(argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e.Environ()
	return cmd
}

// CLI runs banger and returns its stdout and stderr together and its exit
// code.
func (e *Env) CLI(args ...string) (string, int) {
	stdout, stderr, code := e.CLISplit(nil, args...)
	return stdout + stderr, code
}

// CLISplit runs banger with stdin (nil: none) and returns its stdout, its
// stderr and its exit code; -1, with the reason in stderr, when it could
// not be run or was stopped by Timeout.
func (e *Env) CLISplit(stdin io.Reader, args ...string) (string, string, int) {
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := e.Command(ctx, args...)
	cmd.Stdin = stdin
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok && ctx.Err() == nil {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		s.WriteString(err.Error())
	}
	return o.String(), s.String(), code
}

// Must runs banger and returns its stdout; a non-zero exit fails the test
// with both outputs.
func (e *Env) Must(t testing.TB, args ...string) string {
	t.Helper()
	stdout, stderr, code := e.CLISplit(nil, args...)
	if code != 0 {
		t.Fatalf("banger %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// DaemonPID is the PID in the state dir's lock file: bangerd's, or 0.
func (e *Env) DaemonPID() int {
	b, _ := os.ReadFile(filepath.Join(e.State, "bangerd.lock"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// StopDaemon asks bangerd to stop and waits (bounded) until it is gone.
func (e *Env) StopDaemon() {
	pid := e.DaemonPID()
	e.CLI("daemon", "stop")
	WaitGone(pid)
}

// WaitGone waits up to 20s for process pid to exit (a zombie counts as
// gone). pid <= 0 returns at once.
func WaitGone(pid int) {
	for i := 0; i < 1000 && pid > 0; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
