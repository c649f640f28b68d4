package doctor

import (
	"context"
	"fmt"

	"banger/internal/hostprobe"
)

// Status is the outcome of one check.
type Status string

// Statuses. Only Fail makes `banger doctor` exit non-zero: it means banger
// cannot work as configured. Warn means something is missing or degraded
// that banger can do without.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is the finding of one check. Fix is empty when Status is OK.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Host is where the checks look (hostprobe.Host). Tests point it at a fake
// tree and a PATH of fake programs.
type Host = hostprobe.Host

// SystemHost is the real host: the root filesystem, $PATH and this
// process's effective user id.
func SystemHost() Host { return hostprobe.System() }

// Settings is the part of banger's configuration the checks need, with the
// meaning it has in config.Config.
type Settings struct {
	VMM            string // "auto", "firecracker" or "qemu"
	COW            string // "auto", "dmsnap", "reflink" or "copy"
	FirecrackerBin string // "" = firecracker on PATH
	QemuBin        string // "" = qemu-system-x86_64 on PATH
	StateDir       string
	SSHKeyPath     string
	Network        string // "auto", "bridge" or "user"
	HelperSocket   string
}

// Helper is what asking the privileged helper found. Only a user's bangerd
// uses it; for root it is not probed.
type Helper struct {
	Socket   string
	Version  string // the helper's build
	Protocol int    // the protocol it speaks
	// Want is the protocol this build speaks.
	Want int
	// Err is why the helper could not be asked (nothing listens, refused).
	Err error
	// Snapshots is the helper's reason for having no dm snapshots, or "".
	Snapshots string
}

// Daemon is what probing the daemon's socket found.
type Daemon struct {
	Running bool
	Version string
	API     int
	PID     int
	Socket  string
	// Err is a failure other than "nothing listens on the socket".
	Err error
}

// Inputs is everything Run checks.
type Inputs struct {
	Host Host
	// ConfigPath is the config file consulted; ConfigErr is why loading
	// it failed. Config is nil exactly when ConfigErr is set, and then
	// the checks that depend on the config are left out.
	ConfigPath  string
	ConfigFound bool
	Config      *Settings
	ConfigErr   error
	// Daemon is nil when the daemon could not be probed (no socket path
	// without a config); those checks are then left out.
	Daemon *Daemon
	// Helper is nil when it was not probed (banger runs as root, or no
	// config); the helper check then says whether it is needed.
	Helper *Helper
	// CLIVersion and APIVersion are this build's, compared with the
	// daemon's.
	CLIVersion string
	APIVersion int
}

// LowDiskSpace is the free space in the state dir below which doctor warns.
const LowDiskSpace = 5 << 30

// Run performs every check and returns the results in a fixed order.
// It never fails as a whole: a probe that goes wrong is a finding.
func Run(ctx context.Context, in Inputs) []Result {
	h := in.Host
	var s Settings
	if in.Config != nil {
		s = *in.Config
	}
	var out []Result
	out = append(out, checkConfig(in.ConfigPath, in.ConfigFound, in.ConfigErr))
	f := hostprobe.Probe(ctx, hostprobe.Options{
		Host: h, FirecrackerBin: s.FirecrackerBin, QemuBin: s.QemuBin, StateDir: s.StateDir,
		Versions: true, Snapshots: snapshotsHook(h, in.Helper),
	})
	out = append(out, checkKVM(f.KVM), checkFirecracker(f.Firecracker), checkQEMU(f.QEMU))
	if in.Config != nil {
		out = append(out, checkVMM(s.VMM, f), checkCOW(s.COW, f), checkStateDir(probeSpace(s.StateDir)),
			checkStore(ctx, s.StateDir), checkOrphans(s.StateDir), checkSnapshots(s.StateDir), checkReflink(f.Reflink), checkSSHKey(s.SSHKeyPath))
	}
	if in.Daemon != nil {
		out = append(out, checkDaemon(*in.Daemon, in.CLIVersion, in.APIVersion))
	}
	out = append(out,
		checkHelper(h, in.Helper, s.Network, in.CLIVersion),
		checkDeviceMapper(f.DM),
		checkLoop(f.DM),
		checkTun(f.TUN),
		checkBridge(h),
		checkIPForward(h),
		checkTools(h),
	)
	return out
}

// Failed reports whether any result is a failure.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Count returns how many results have each status.
func Count(rs []Result) map[Status]int {
	n := map[Status]int{OK: 0, Warn: 0, Fail: 0}
	for _, r := range rs {
		n[r.Status]++
	}
	return n
}

func ok(name, format string, args ...any) Result {
	return Result{Name: name, Status: OK, Detail: fmt.Sprintf(format, args...)}
}

func warn(name, fix, format string, args ...any) Result {
	return Result{Name: name, Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func fail(name, fix, format string, args ...any) Result {
	return Result{Name: name, Status: Fail, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func checkConfig(path string, found bool, err error) Result {
	if err != nil {
		return fail("config", "correct what the error names, then re-check with `banger config show`; the checks that need the config were skipped",
			"%v", err)
	}
	if !found {
		return ok("config", "no file at %s: the defaults apply", path)
	}
	return ok("config", "%s is valid", path)
}
