package cli_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"banger/internal/buildinfo"
	"banger/internal/cli"
	"banger/internal/daemon"
	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/testutil/bangerenv"
)

// testKinds are operations the test daemon can start directly, so scripts can
// drive progress, failure and cancellation end to end.
func testKinds() map[string]opstate.Func {
	steps, _ := strconv.Atoi(os.Getenv("BANGER_TEST_STEPS"))
	if steps <= 0 {
		steps = 5
	}
	stepMS, _ := strconv.Atoi(os.Getenv("BANGER_TEST_STEP_MS"))
	if stepMS <= 0 {
		stepMS = 20
	}
	return map[string]opstate.Func{
		"step": func(ctx context.Context, p *opstate.Progress) error {
			p.Phase("stepping")
			p.SetTotal(int64(steps), "items")
			for i := 0; i < steps; i++ {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Duration(stepMS) * time.Millisecond):
				}
				p.Add(1)
			}
			return nil
		},
		"block": func(ctx context.Context, p *opstate.Progress) error {
			p.Phase("blocking")
			<-ctx.Done()
			return ctx.Err()
		},
		"fail": func(ctx context.Context, p *opstate.Progress) error {
			p.Phase("failing")
			return errors.New("simulated failure")
		},
	}
}

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"banger": func() { os.Exit(cli.Main()) },
		"bangerd": func() {
			if os.Getenv("BANGER_TEST_DAEMON_FAIL") != "" {
				fmt.Fprintln(os.Stderr, "bangerd: simulated start failure")
				os.Exit(1)
			}
			if v := os.Getenv("BANGER_TEST_DAEMON_VERSION"); v != "" {
				buildinfo.Version = v
			}
			os.Exit(daemon.Main(os.Args[1:], daemon.MainOptions{DirectKinds: testKinds()}))
		},
	})
}

// agentBin builds the static guest agent once per test run; kernel imports
// need it as the initramfs's /init.
var agentBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "banger-agent")
	if err != nil {
		return "", err
	}
	if err := bangerenv.Build(dir, bangerenv.Agent); err != nil {
		return "", err
	}
	return filepath.Join(dir, bangerenv.Agent.Name), nil
})

func TestScripts(t *testing.T) {
	agent, err := agentBin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(agent)) })
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		UpdateScripts:       os.Getenv("BANGER_UPDATE_GOLDEN") != "",
		Setup: func(env *testscript.Env) error {
			home := filepath.Join(env.WorkDir, "home")
			env.Setenv("HOME", home)
			env.Setenv("XDG_RUNTIME_DIR", filepath.Join(env.WorkDir, "run"))
			env.Setenv("XDG_CONFIG_HOME", "")
			env.Setenv("XDG_STATE_HOME", "")
			env.Setenv("BANGER_CONFIG", "")
			env.Setenv("NO_COLOR", "1")
			env.Setenv("BANGER_AGENT_BIN", agent)
			env.Setenv("STATE", filepath.Join(home, ".local", "state", "banger"))
			env.Defer(func() { stopDaemon(filepath.Join(home, ".local", "state", "banger")) })
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"startop":    cmdStartOp,
			"killdaemon": cmdKillDaemon,
			"waitop":     cmdWaitOpState,
			"waitlog":    cmdWaitLog,
			"ptyrun":     cmdPTYRun,
		},
	})
}

func socketOf(ts *testscript.TestScript) string {
	return filepath.Join(ts.Getenv("XDG_RUNTIME_DIR"), "banger", "bangerd.sock")
}

// startop KIND [VAR]: start an operation of a test kind; its id goes to $VAR
// (default OPID).
func cmdStartOp(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: startop KIND [VAR]")
	}
	c := rpc.NewClient(socketOf(ts))
	defer c.Close()
	var op rpc.Operation
	err := c.Do(context.Background(), "POST", "/v1/ops", rpc.StartOperationRequest{Kind: args[0], Target: "t"}, &op)
	if neg {
		if err == nil {
			ts.Fatalf("startop succeeded")
		}
		return
	}
	ts.Check(err)
	name := "OPID"
	if len(args) > 1 {
		name = args[1]
	}
	ts.Setenv(name, op.ID)
}

// waitop ID STATE: wait (bounded) until the operation is in STATE.
func cmdWaitOpState(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waitop ID STATE")
	}
	c := rpc.NewClient(socketOf(ts))
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	var op rpc.Operation
	for time.Now().Before(deadline) {
		ts.Check(c.Do(context.Background(), "GET", "/v1/ops/"+args[0], nil, &op))
		if op.State == args[1] {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("operation %s is %s, not %s", args[0], op.State, args[1])
}

// waitlog REGEXP: wait (bounded) until the daemon log has a matching line.
func cmdWaitLog(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitlog REGEXP")
	}
	re, err := regexp.Compile(args[0])
	ts.Check(err)
	path := filepath.Join(ts.Getenv("STATE"), "bangerd.log")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(path)
		if re.Match(data) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("no line matching %q in %s", args[0], path)
}

// killdaemon [-TERM]: SIGKILL the daemon, as a crash would, or SIGTERM it.
func cmdKillDaemon(ts *testscript.TestScript, neg bool, args []string) {
	pid := lockPID(filepath.Join(ts.Getenv("STATE")))
	if pid <= 0 {
		ts.Fatalf("no daemon pid in the lock file")
	}
	sig := syscall.SIGKILL
	if len(args) == 1 && args[0] == "-TERM" {
		sig = syscall.SIGTERM
	}
	ts.Check(syscall.Kill(pid, sig))
	waitGone(pid)
}

func lockPID(stateDir string) int {
	b, err := os.ReadFile(filepath.Join(stateDir, "bangerd.lock"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func waitGone(pid int) {
	for i := 0; i < 500; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopDaemon ends a daemon a script left running.
func stopDaemon(stateDir string) {
	if pid := lockPID(stateDir); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		waitGone(pid)
	}
}
