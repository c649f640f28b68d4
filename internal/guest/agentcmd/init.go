package agentcmd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"banger/internal/guest/boot"
)

// afterStopWait bounds how long the command started after the boot duties
// gets to exit on SIGTERM when the agent stops, before it is killed.
const afterStopWait = 5 * time.Second

// readyWait bounds how long a health request waits for the boot duties to
// end before it answers "not ready".
const readyWait = time.Second

// runInit is the init command, the whole of what an image without an init
// system needs from its /sbin/init: the basic mounts (in-process, without a
// mount command each), the boot duties, then CMD (typically sshd) started in
// the background once the duties are done, so that it sees this boot's SSH
// keys and host name. The protocol is served from the start, and while the
// duties run a health request waits for them (up to readyWait) before it
// answers: the host learns that the guest is ready the moment it is, with
// no polling, and the serving path is set up while the duties run.
func runInit(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getenv(EnvTestRoot) == "" {
		step := boot.MountBasics("/", boot.BasicMounts)
		fmt.Println(strings.ReplaceAll(step.String(), "\n", "; "))
		if step.Status == boot.StatusFailed {
			logf("boot duty %s", step)
		}
	} else {
		logf("%s is set: leaving the mounts alone", EnvTestRoot)
	}
	// The kernel command line is read once /proc is there.
	st := readSettings()
	env := bootEnv()
	booted := make(chan struct{})
	ready := func() bool {
		t := time.NewTimer(readyWait)
		defer t.Stop()
		select {
		case <-booted:
		case <-t.C:
		case <-ctx.Done():
		}
		return boot.Ready(env.ReadyFile)
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, st, agentOptions(ready)) }()
	runBoot(ctx, st, env)
	close(booted)
	var after *afterBoot
	if ctx.Err() == nil { // not when asked to stop during the duties
		after = startAfterBoot(args)
	}
	defer after.stop()
	if err := <-errc; err != nil {
		logf("%v", err)
		return 1
	}
	return 0
}

// afterBoot is the command init starts once the boot duties are done.
type afterBoot struct {
	name    string
	started chan struct{} // closed once the start has been tried; proc is set then
	proc    *os.Process   // nil when the command could not start
	done    chan struct{} // closed when it has exited and been waited for
}

// startAfterBoot starts argv in its own session with the agent's output
// (the console) and no input, in the background: fork and exec take tens of
// milliseconds under software emulation, and the agent need not wait for
// them to serve. A command that cannot start is reported; the agent serves
// anyway. It returns nil when there is nothing to run.
func startAfterBoot(argv []string) *afterBoot {
	if len(argv) == 0 {
		return nil
	}
	a := &afterBoot{name: argv[0], started: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err := cmd.Start()
		if err == nil {
			a.proc = cmd.Process
		}
		close(a.started)
		if err != nil {
			logf("start %s after the boot duties: %v", a.name, err)
			return
		}
		if err := cmd.Wait(); err != nil {
			logf("%s (started after the boot duties) exited: %v", a.name, err)
		}
	}()
	return a
}

// stop ends the command when the agent stops: SIGTERM, then SIGKILL when it
// is still running after afterStopWait.
func (a *afterBoot) stop() {
	if a == nil {
		return
	}
	<-a.started
	if a.proc == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.proc.Signal(syscall.SIGTERM)
	t := time.NewTimer(afterStopWait)
	defer t.Stop()
	select {
	case <-a.done:
		return
	case <-t.C:
	}
	logf("%s did not exit %s after SIGTERM; killing it", a.name, afterStopWait)
	_ = a.proc.Kill()
	<-a.done
}
