package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/guest/agent"
	"banger/internal/guest/boot"
	"banger/internal/guest/initrd"
	"banger/internal/guest/proto"

	"golang.org/x/sys/unix"
)

const cmdlinePath = "/proc/cmdline"

// Test hooks: environment variables that let tests run the binary outside
// a guest. Nothing in a guest sets them.
const (
	// EnvTestCmdline names a file read instead of /proc/cmdline.
	EnvTestCmdline = "BANGER_AGENT_TEST_CMDLINE"
	// EnvTestListen names a Unix socket to serve on instead of vsock or
	// the virtio-serial port.
	EnvTestListen = "BANGER_AGENT_TEST_LISTEN"
	// EnvTestRoot is a directory that stands in for / for the files the
	// boot duties write (etc, root's home, the ready marker); the hostname
	// is then not set in the kernel, and the network is left alone.
	EnvTestRoot = "BANGER_AGENT_TEST_ROOT"
)

// Usage is the help text of the agent's commands.
const Usage = `usage: banger-vsock-agent [serve | boot | run | init [-- CMD...] | version]

  serve    serve the guest-agent protocol over vsock or virtio-serial,
           as banger.transport says (the default command)
  boot     apply the banger.* kernel parameters (hostname, network, DNS,
           SSH keys, root filesystem size) once, then exit
  run      boot, serving meanwhile; for guests without systemd
  init     for the /sbin/init of an image without an init system: mount
           /proc, /sys, /dev, /dev/pts and /run where missing, boot while
           serving, and start CMD (e.g. sshd) once the boot duties are done
  version  print the agent's version and protocol version
`

// IsInitramfsInit reports whether this process is the initramfs's /init.
func IsInitramfsInit() bool {
	if os.Getpid() != 1 {
		return false
	}
	if len(os.Args) > 0 && os.Args[0] == "/init" {
		return true
	}
	exe, err := os.Executable()
	return err == nil && exe == "/init"
}

// RunInitramfs hands PID 1 to the initramfs program. It never returns: PID
// 1 exiting panics the kernel.
func RunInitramfs() {
	if err := initrd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: as /init: %v\n", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// Run runs the command args name (os.Args[1:]; see Usage) and returns the
// process's exit code: 0, 1 when serving failed, 2 for bad usage.
func Run(args []string) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	if cmd == "init" {
		return runInit(args[1:])
	}
	if len(args) > 1 {
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: %s takes no arguments\n%s", cmd, Usage)
		return 2
	}
	switch cmd {
	case "version", "--version", "-v":
		fmt.Printf("banger-vsock-agent %s (protocol %d)\n", buildinfo.Version, proto.Version)
		return 0
	case "help", "--help", "-h":
		fmt.Print(Usage)
		return 0
	case "boot", "serve", "run":
	default:
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: unknown command %q\n%s", cmd, Usage)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	st := readSettings()
	env := bootEnv()

	switch cmd {
	case "boot":
		if earlyDone(ctx, env, earlyPoll) {
			fmt.Println("banger-vsock-agent: the early agent the initramfs started did the boot duties")
			return 0
		}
		if os.Getenv(EnvTestRoot) == "" {
			waitWritable(ctx, rootReadOnly, rootPoll, rootWait)
		}
		runBoot(ctx, st, env)
		return 0
	case "serve":
		if pid := earlyAgent(env); pid > 0 {
			// The port is the early agent's: serve once it is gone, so that
			// systemd restarts a serving agent from then on.
			logf("the early agent (pid %d) serves; waiting for it to exit", pid)
			if err := boot.WaitEarlyAgentExit(ctx, pid, func() bool { return earlyAgent(env) == pid }, earlyPoll); err != nil {
				return 0
			}
			logf("the early agent (pid %d) exited; serving", pid)
		}
		opts := agentOptions(func() bool { return boot.Ready(env.ReadyFile) })
		if err := serve(ctx, st, opts); err != nil {
			logf("%v", err)
			return 1
		}
		return 0
	default: // run
		var ready atomic.Bool
		opts := agentOptions(ready.Load)
		errc := make(chan error, 1)
		go func() { errc <- serve(ctx, st, opts) }()
		runBoot(ctx, st, env)
		ready.Store(true)
		if err := <-errc; err != nil {
			logf("%v", err)
			return 1
		}
		return 0
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "banger-vsock-agent: "+format+"\n", args...)
}

// readSettings parses the kernel command line. Whatever cannot be read or
// parsed is reported and left at its default: a guest must come up as far
// as it can.
func readSettings() boot.Settings {
	path := cmdlinePath
	if p := os.Getenv(EnvTestCmdline); p != "" {
		path = p
	}
	data, err := os.ReadFile(path)
	if err != nil {
		logf("read the kernel command line: %v; using defaults", err)
		return boot.Defaults()
	}
	st, err := boot.ParseCmdline(string(data))
	for _, w := range st.Warnings {
		logf("%s", w)
	}
	if err != nil {
		logf("%v", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return st
}

func bootEnv() boot.Env {
	root := os.Getenv(EnvTestRoot)
	if root == "" {
		return boot.Env{}
	}
	return boot.Env{
		EtcDir:      filepath.Join(root, "etc"),
		RootHome:    filepath.Join(root, "root"),
		ReadyFile:   filepath.Join(root, "run", "banger", "ready"),
		MountInfo:   filepath.Join(root, "proc", "self", "mountinfo"),
		SysDir:      filepath.Join(root, "sys"),
		DevDir:      filepath.Join(root, "dev"),
		SetHostname: func(string) error { return errors.New("not set under " + EnvTestRoot) },
	}
}

// earlyPoll is how often the units' agent looks at the early agent.
const earlyPoll = 200 * time.Millisecond

// earlyAgent is the pid of the agent banger's initramfs started before
// systemd (boot.EarlyAgentFile), or 0.
func earlyAgent(env boot.Env) int {
	file, proc := boot.EarlyAgentFile, "/proc"
	if root := os.Getenv(EnvTestRoot); root != "" {
		file, proc = filepath.Join(root, boot.EarlyAgentFile), filepath.Join(root, "proc")
	}
	return boot.EarlyAgent(file, proc, "banger-vsock-agent")
}

// earlyDone says whether the early agent did the boot duties: it waits
// while that agent runs and its ready file is not there. An early agent
// that is gone before it was ready leaves the duties to the caller.
func earlyDone(ctx context.Context, env boot.Env, poll time.Duration) bool {
	ready := env.ReadyFile
	if ready == "" {
		ready = boot.DefaultReadyFile
	}
	for {
		if earlyAgent(env) == 0 {
			return boot.Ready(ready) && earlyStarted(env)
		}
		if boot.Ready(ready) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(poll):
		}
	}
}

// earlyStarted says whether an early agent was started at this boot (its
// file is there, whatever became of it).
func earlyStarted(env boot.Env) bool {
	file := boot.EarlyAgentFile
	if root := os.Getenv(EnvTestRoot); root != "" {
		file = filepath.Join(root, boot.EarlyAgentFile)
	}
	_, err := os.Stat(file)
	return err == nil
}

// How long and how often the boot command waits for / to be writable.
const (
	rootWait = 30 * time.Second
	rootPoll = 20 * time.Millisecond
)

// waitWritable waits until readOnly says the root filesystem is writable,
// at most bound, and reports whether it is. The boot duties write /etc and
// /root, but their unit is not ordered after systemd-remount-fs: banger
// mounts / read-write from the initramfs, so that remount changes nothing
// and costs a second or more under emulation. When / is read-only all the
// same (an image booted with "ro"), the duties wait here for the remount.
// A failing check counts as writable: the duties then report what fails.
func waitWritable(ctx context.Context, readOnly func() (bool, error), poll, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	logged := false
	for {
		ro, err := readOnly()
		if err != nil {
			logf("check whether / is writable: %v; going on", err)
			return true
		}
		if !ro {
			return true
		}
		if !logged {
			logf("/ is read-only; waiting up to %v for it to be remounted read-write", bound)
			logged = true
		}
		if time.Now().After(deadline) {
			logf("/ is still read-only after %v; the boot duties that write files will fail", bound)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(poll):
		}
	}
}

// rootReadOnly reports whether / is mounted read-only.
func rootReadOnly() (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false, err
	}
	return st.Flags&unix.ST_RDONLY != 0, nil
}

// runBoot applies the settings and prints the report: every step on
// stdout, failures again on stderr.
func runBoot(ctx context.Context, st boot.Settings, env boot.Env) {
	if os.Getenv(EnvTestRoot) != "" && st.Networked() {
		logf("%s is set: leaving the network alone", EnvTestRoot)
		st.Addr, st.Gateway, st.MTU, st.Iface = netip.Prefix{}, netip.Addr{}, 0, ""
	}
	rep, _ := boot.Apply(ctx, st, env)
	fmt.Print(rep.String())
	for _, s := range rep.Failed() {
		logf("boot duty %s", s)
	}
}

func agentOptions(ready func() bool) agent.Options {
	opts := agent.Options{
		Version:  buildinfo.Version,
		Ready:    ready,
		PowerOff: agent.SystemPowerOff,
		Reboot:   agent.SystemReboot,
		SetClock: agent.SystemSetClock,
		Logf:     logf,
	}
	// A clone's resume changes the machine (clock, network, host keys):
	// not served when the agent runs against a test root.
	if os.Getenv(EnvTestRoot) == "" {
		opts.Resume = boot.Resumer(boot.ResumeEnv{})
	}
	return opts
}

// serve serves the guest-agent protocol on the transport the settings name
// until ctx is done, reopening the transport when it fails.
func serve(ctx context.Context, st boot.Settings, opts agent.Options) error {
	if path := os.Getenv(EnvTestListen); path != "" {
		return agent.ServeUnix(ctx, path, opts)
	}
	switch st.Transport {
	case boot.TransportSerial:
		return agent.ServeSerial(ctx, "/sys", "/dev", proto.SerialPortName, opts)
	default:
		return agent.ServeVsock(ctx, st.Port, opts)
	}
}
