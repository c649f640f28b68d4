// Command banger-vsock-agent runs inside every banger guest: it applies the
// VM's settings at boot and serves the guest-agent protocol to bangerd. Run
// as /init (PID 1) in banger's initramfs, it is the initramfs's init instead.
//
// Usage:
//
//	banger-vsock-agent [serve]   serve the guest-agent protocol (the default)
//	banger-vsock-agent boot      apply the banger.* kernel parameters once
//	banger-vsock-agent run       boot, and serve meanwhile (inits without systemd)
//	banger-vsock-agent init [-- CMD...]
//	                             mount the basics, boot while serving, then
//	                             start CMD (images without an init system)
//	banger-vsock-agent version   print the version and protocol
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
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
	// envTestCmdline names a file read instead of /proc/cmdline.
	envTestCmdline = "BANGER_AGENT_TEST_CMDLINE"
	// envTestListen names a Unix socket to serve on instead of vsock or
	// the virtio-serial port.
	envTestListen = "BANGER_AGENT_TEST_LISTEN"
	// envTestRoot is a directory that stands in for / for the files the
	// boot duties write (etc, root's home, the ready marker); the hostname
	// is then not set in the kernel, and the network is left alone.
	envTestRoot = "BANGER_AGENT_TEST_ROOT"
)

const usage = `usage: banger-vsock-agent [serve | boot | run | init [-- CMD...] | version]

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

func main() {
	if isInitramfsInit() {
		runInitramfs()
	}
	os.Exit(run(os.Args[1:]))
}

// isInitramfsInit reports whether this process is the initramfs's /init.
func isInitramfsInit() bool {
	if os.Getpid() != 1 {
		return false
	}
	if len(os.Args) > 0 && os.Args[0] == "/init" {
		return true
	}
	exe, err := os.Executable()
	return err == nil && exe == "/init"
}

// runInitramfs hands PID 1 to the initramfs program. It never returns: PID
// 1 exiting panics the kernel.
func runInitramfs() {
	if err := initrd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: as /init: %v\n", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

func run(args []string) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	if cmd == "init" {
		return runInit(args[1:])
	}
	if len(args) > 1 {
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: %s takes no arguments\n%s", cmd, usage)
		return 2
	}
	switch cmd {
	case "version", "--version", "-v":
		fmt.Printf("banger-vsock-agent %s (protocol %d)\n", buildinfo.Version, proto.Version)
		return 0
	case "help", "--help", "-h":
		fmt.Print(usage)
		return 0
	case "boot", "serve", "run":
	default:
		fmt.Fprintf(os.Stderr, "banger-vsock-agent: unknown command %q\n%s", cmd, usage)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	st := readSettings()
	env := bootEnv()

	switch cmd {
	case "boot":
		runBoot(ctx, st, env)
		return 0
	case "serve":
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
	if p := os.Getenv(envTestCmdline); p != "" {
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
	root := os.Getenv(envTestRoot)
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
		SetHostname: func(string) error { return errors.New("not set under " + envTestRoot) },
	}
}

// runBoot applies the settings and prints the report: every step on
// stdout, failures again on stderr.
func runBoot(ctx context.Context, st boot.Settings, env boot.Env) {
	if os.Getenv(envTestRoot) != "" && st.Networked() {
		logf("%s is set: leaving the network alone", envTestRoot)
		st.Addr, st.Gateway, st.MTU, st.Iface = netip.Prefix{}, netip.Addr{}, 0, ""
	}
	rep, _ := boot.Apply(ctx, st, env)
	fmt.Print(rep.String())
	for _, s := range rep.Failed() {
		logf("boot duty %s", s)
	}
}

func agentOptions(ready func() bool) agent.Options {
	return agent.Options{
		Version:  buildinfo.Version,
		Ready:    ready,
		PowerOff: agent.SystemPowerOff,
		Reboot:   agent.SystemReboot,
		SetClock: agent.SystemSetClock,
		Logf:     logf,
	}
}

// serve serves the guest-agent protocol on the transport the settings name
// until ctx is done, reopening the transport when it fails.
func serve(ctx context.Context, st boot.Settings, opts agent.Options) error {
	if path := os.Getenv(envTestListen); path != "" {
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			return fmt.Errorf("listen on %s (%s): %w", path, envTestListen, err)
		}
		defer os.Remove(path)
		logf("serving on unix:%s", path)
		return agent.Serve(ctx, ln, opts)
	}
	switch st.Transport {
	case boot.TransportSerial:
		return serveSerial(ctx, opts)
	default:
		return serveVsock(ctx, st.Port, opts)
	}
}

// backoff sleeps before the next attempt, longer each time up to 2s. It
// returns false when ctx ended the wait.
type backoff struct{ d time.Duration }

func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, 100*time.Millisecond), 2*time.Second)
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.d = 0 }

// serveVsock listens on the vsock port, waiting for the vsock driver when
// it is not there yet.
func serveVsock(ctx context.Context, port uint32, opts agent.Options) error {
	var b backoff
	lastErr := ""
	for {
		ln, err := agent.ListenVsock(port)
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				logf("listen on vsock port %d: %v; retrying (is the vsock driver loaded?)", port, err)
				lastErr = msg
			}
			if !b.wait(ctx) {
				return nil
			}
			continue
		}
		lastErr = ""
		b.reset()
		logf("serving on vsock port %d", port)
		err = agent.Serve(ctx, ln, opts)
		if ctx.Err() != nil {
			return nil
		}
		logf("vsock listener failed: %v; listening again", err)
		if !b.wait(ctx) {
			return nil
		}
	}
}

// serveSerial runs the multiplexed protocol on the virtio-serial port,
// reopening the port whenever the session ends.
func serveSerial(ctx context.Context, opts agent.Options) error {
	var b backoff
	lastErr := ""
	waiting := false
	for {
		if err := ensurePortNodes("/sys", "/dev", proto.SerialPortName); err != nil {
			logf("%v", err)
		}
		dev, err := agent.FindSerialPort("/sys", "/dev", proto.SerialPortName)
		var f *os.File
		if err == nil {
			f, err = os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
		}
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				logf("open the virtio-serial port: %v; retrying", err)
				lastErr = msg
			}
			if !b.wait(ctx) {
				return nil
			}
			continue
		}
		lastErr = ""
		// While no host is attached, each open ends at once with EOF; say
		// so once, not on every retry.
		if !waiting {
			logf("serving on %s", dev)
		}
		started := time.Now()
		err = agent.ServeMux(ctx, f, opts)
		f.Close()
		if ctx.Err() != nil {
			return nil
		}
		short := time.Since(started) < time.Second
		if !short || !waiting {
			logf("%v; reopening %s", err, dev)
		}
		waiting = short
		if time.Since(started) > 5*time.Second {
			b.reset()
		}
		if !b.wait(ctx) {
			return nil
		}
	}
}

// ensurePortNodes creates the device node of the virtio-serial port called
// name when it is missing (no udev, no devtmpfs node yet), from the
// major:minor in <sysDir>/class/virtio-ports/<port>/dev.
func ensurePortNodes(sysDir, devDir, name string) error {
	names, _ := filepath.Glob(filepath.Join(sysDir, "class", "virtio-ports", "*", "name"))
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		port := filepath.Base(filepath.Dir(p))
		node := filepath.Join(devDir, port)
		if _, err := os.Stat(node); err == nil {
			return nil
		}
		devFile := filepath.Join(filepath.Dir(p), "dev")
		mm, err := os.ReadFile(devFile)
		if err != nil {
			return fmt.Errorf("virtio-serial port %s has no device node and its number cannot be read: %w", port, err)
		}
		maj, mnr, ok := strings.Cut(strings.TrimSpace(string(mm)), ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(mnr, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("virtio-serial port %s: %s holds %q, not major:minor", port, devFile, strings.TrimSpace(string(mm)))
		}
		if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create the device node %s (%d:%d): %w", node, ma, mi, err)
		}
		return nil
	}
	return nil
}
