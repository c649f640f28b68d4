package bangerenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeBanger puts a shell script called banger in a bin dir: it prints its
// arguments and environment and exits with the code in $FAKE_EXIT.
func fakeBanger(t *testing.T, script string) string {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to stand in for banger")
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "banger"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestNewWritesConfigAndNamesDirs(t *testing.T) {
	home, run := t.TempDir(), t.TempDir()
	e, err := New("/nonexistent", home, run, "vmm = \"qemu\"\n")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(home, ".config", "banger", "config.toml"))
	if err != nil || string(data) != "vmm = \"qemu\"\n" {
		t.Errorf("config.toml = %q, %v", data, err)
	}
	if e.State != filepath.Join(home, ".local", "state", "banger") || e.Runtime != run || e.Home != home {
		t.Errorf("env dirs = %+v", e)
	}
}

func TestCommandEnvironmentAndExitCodes(t *testing.T) {
	bin := fakeBanger(t, `echo "args=$*"; echo "home=$HOME run=$XDG_RUNTIME_DIR cfg=${BANGER_CONFIG-unset} extra=$EXTRA"; echo err >&2; exit ${FAKE_EXIT:-0}`)
	t.Setenv("BANGER_CONFIG", "/elsewhere/config.toml")
	e, err := New(bin, t.TempDir(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	e.ExtraEnv = []string{"EXTRA=yes"}
	out := e.Must(t, "vm", "ls")
	want := "args=vm ls\nhome=" + e.Home + " run=" + e.Runtime + " cfg=unset extra=yes\n"
	if out != want {
		t.Errorf("Must = %q, want %q (stdout only, the env's dirs, BANGER_CONFIG dropped)", out, want)
	}
	e.ExtraEnv = append(e.ExtraEnv, "FAKE_EXIT=3")
	if combined, code := e.CLI("x"); code != 3 || !strings.HasSuffix(combined, "err\n") {
		t.Errorf("CLI = %q, %d; want both outputs and exit 3", combined, code)
	}
	e.Wrap = func(argv []string) []string { return append([]string{"env", "FAKE_EXIT=0"}, argv...) }
	if _, _, code := e.CLISplit(strings.NewReader(""), "y"); code != 0 {
		t.Errorf("Wrap was not applied: exit %d", code)
	}
}

func TestTimeoutGivesMinusOne(t *testing.T) {
	bin := fakeBanger(t, "exec sleep 30\n")
	e, err := New(bin, t.TempDir(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	e.Timeout = 200 * time.Millisecond
	start := time.Now()
	if _, stderr, code := e.CLISplit(nil, "hang"); code != -1 || stderr == "" {
		t.Errorf("a command past its timeout gave exit %d, stderr %q; want -1 and a reason", code, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the timeout did not stop the command: took %s", d)
	}
}

func TestDaemonPIDAndWaitGone(t *testing.T) {
	e, err := New("/nonexistent", t.TempDir(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if pid := e.DaemonPID(); pid != 0 {
		t.Errorf("DaemonPID with no lock file = %d", pid)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	os.MkdirAll(e.State, 0o700)
	os.WriteFile(filepath.Join(e.State, "bangerd.lock"), []byte(" 123\n"), 0o600)
	if pid := e.DaemonPID(); pid != 123 {
		t.Errorf("DaemonPID = %d, want 123", pid)
	}
	done := make(chan struct{})
	go func() { WaitGone(cmd.Process.Pid); close(done) }()
	select {
	case <-done:
		t.Fatal("WaitGone returned while the process runs")
	case <-time.After(100 * time.Millisecond):
	}
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("WaitGone did not return once the process was gone")
	}
}

func TestBuildAgent(t *testing.T) {
	if r := Need("go"); r != "" {
		t.Skip(r)
	}
	if Need("surely-no-such-tool-here") == "" {
		t.Error("Need found a tool that does not exist")
	}
	dir := t.TempDir()
	if err := Build(dir, Agent); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, Agent.Name))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("no executable agent after Build: %v", err)
	}
	if err := Build(dir, Binary{Name: "x", Pkg: "banger/cmd/no-such-command"}); err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Errorf("building a missing package: %v", err)
	}
}

func TestProcessesByCwdAndArgs(t *testing.T) {
	dir := t.TempDir()
	byCwd := exec.Command("sleep", "30")
	byCwd.Dir = dir
	byArg := exec.Command("sh", "-c", "sleep 30; : "+dir)
	for _, c := range []*exec.Cmd{byCwd, byArg} {
		if err := c.Start(); err != nil {
			t.Skipf("cannot start a process: %v", err)
		}
		defer func(c *exec.Cmd) { c.Process.Kill(); c.Wait() }(c)
	}
	found := map[int]bool{}
	for _, p := range Processes(dir) {
		found[p.PID] = true
		if p.String() == "" || len(p.Argv) == 0 {
			t.Errorf("process %d recorded without its command line", p.PID)
		}
	}
	if !found[byCwd.Process.Pid] || !found[byArg.Process.Pid] {
		t.Errorf("Processes(%s) = %v; want %d (cwd) and %d (argument)", dir, Processes(dir), byCwd.Process.Pid, byArg.Process.Pid)
	}
	byCwd.Process.Kill()
	byCwd.Wait()
	for _, p := range Processes(dir) {
		if p.PID == byCwd.Process.Pid {
			t.Errorf("process %d listed after it ended", p.PID)
		}
	}
}
