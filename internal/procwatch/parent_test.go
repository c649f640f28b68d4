package procwatch

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestKillNeverKillsParent: the process that started the caller (a shell,
// the CLI that spawned bangerd) is not a stray even when match approves
// it. The test binary runs again under sh, and kills its parent's match.
func TestKillNeverKillsParent(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `"$0" -test.run='^TestKillParentHelper$' -test.v; echo "sh survived"`, os.Args[0])
	cmd.Env = append(os.Environ(), "PROCWATCH_KILL_PARENT=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sh survived") || !strings.Contains(string(out), "--- PASS: TestKillParentHelper") {
		t.Fatalf("KillMatching from a child killed its parent shell: %v\n%s", err, out)
	}
}

// TestKillParentHelper is the half of TestKillNeverKillsParent that runs
// under sh; on its own it does nothing.
func TestKillParentHelper(t *testing.T) {
	if os.Getenv("PROCWATCH_KILL_PARENT") == "" {
		t.Skip("run by TestKillNeverKillsParent")
	}
	ppid := os.Getppid()
	if n := KillMatching(func(p Proc) bool { return p.PID == ppid }, time.Second); n != 0 {
		t.Errorf("KillMatching killed %d", n)
	}
}
