package privhelperd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"banger/internal/buildinfo"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/sdnotify"
)

// DefaultAllowFile lists the users the helper serves.
const DefaultAllowFile = "/etc/banger/helper-users"

// DefaultSubnetRange holds every subnet the helper puts on a bridge.
const DefaultSubnetRange = "10.200.0.0/16"

// Main is `bangerd helper`: it serves the helper socket as root until
// SIGTERM or SIGINT, logging to stderr (the journal under systemd) and
// telling systemd when it is ready. It returns the process's exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return run(ctx, args, runEnv{stderr: os.Stderr})
}

// runEnv is what tests change about a run.
type runEnv struct {
	stderr io.Writer
	netns  string // network namespace path for the executor; "" = own
	// sysctlDir is the executor's SystemConfig.SysctlDir.
	sysctlDir string
}

func run(ctx context.Context, args []string, env runEnv) int {
	fs := flag.NewFlagSet("bangerd helper", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	socket := fs.String("socket", privhelper.DefaultSocket, "Unix socket to serve")
	allow := fs.String("allow", DefaultAllowFile, "file of the user names or uids allowed to call the helper, one a line")
	subnets := fs.String("subnet-range", DefaultSubnetRange, "IPv4 range that every bridge subnet must lie in")
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: bangerd helper [--socket PATH] [--allow FILE] [--subnet-range CIDR]\n\n"+
			"Serves banger's privileged operations (bridge, taps, NAT, published ports,\n"+
			"ip_forward, loop-backed device-mapper snapshots)\n"+
			"to the users in the allow file. Runs as root, normally as banger-helper.service.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "bangerd helper: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(env.stderr, "bangerd helper: "+format+"\n", a...)
		return 1
	}
	if euid := os.Geteuid(); euid != 0 {
		return fail("must run as root (euid is %d): it creates bridges, taps and loop devices for the users in %s. "+
			"Start it with `sudo systemctl start banger-helper`; a bangerd running as root needs no helper", euid, *allow)
	}
	rng, err := netip.ParsePrefix(*subnets)
	if err != nil || !rng.Addr().Is4() || rng != rng.Masked() {
		return fail("--subnet-range %q is not an IPv4 network such as %s", *subnets, DefaultSubnetRange)
	}
	if !filepath.IsAbs(*socket) {
		return fail("--socket %q is not an absolute path", *socket)
	}
	uids, err := ReadAllowedUsersFile(*allow)
	if err != nil {
		return fail("cannot read the allow list %s: %v; create it (root-owned) with one user name or uid a line, e.g. `echo $USER | sudo tee %s`", *allow, err, *allow)
	}

	log := slog.New(slog.NewTextHandler(env.stderr, nil))
	if len(uids) == 0 {
		log.Warn("the allow list names no user: every request will be refused", "allow", *allow)
	}
	policy := DefaultPolicy()
	policy.AllowedUIDs = uids
	policy.SubnetRange = rng
	exec, err := NewSystemExecutor(SystemConfig{NetNS: env.netns, LockDir: filepath.Dir(*socket), SysctlDir: env.sysctlDir})
	if err != nil {
		return fail("%v", err)
	}
	defer exec.Close()
	ln, err := Listen(*socket)
	if err != nil {
		return fail("cannot listen on %s: %v", *socket, err)
	}
	// The listener removes its socket on Close, and only while the path is
	// still its own: a helper started while this one finished its last
	// requests may have bound the path already.
	defer ln.Close()
	srv := &Server{Policy: policy, Exec: exec, Version: buildinfo.Version, Log: log}
	log.Info("banger helper listening", "socket", *socket, "allowed_uids", len(uids), "subnet_range", rng.String(), "version", buildinfo.Version)
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("cannot tell systemd the helper is ready", "error", err)
	}
	err = srv.Serve(ctx, ln)
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	if err != nil {
		log.Error("helper stopped", "error", err)
		return 1
	}
	log.Info("banger helper stopped")
	return 0
}
