package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Default locations of what Apply reads and writes in a guest.
const (
	DefaultEtcDir    = "/etc"
	DefaultRootHome  = "/root"
	DefaultReadyFile = "/run/banger/ready"
	DefaultMountInfo = "/proc/self/mountinfo"
	DefaultSysDir    = "/sys"
	DefaultDevDir    = "/dev"
	DefaultLinkWait  = 10 * time.Second
)

// Env is the part of the machine Apply works on. The zero value is the real
// guest; tests point the fields elsewhere.
type Env struct {
	// EtcDir holds hostname, hosts and resolv.conf. Empty means /etc.
	EtcDir string
	// RootHome is root's home directory, for .ssh/authorized_keys. Empty
	// means /root.
	RootHome string
	// ReadyFile is the marker written when the duties are done. Empty
	// means /run/banger/ready.
	ReadyFile string
	// MountInfo, SysDir and DevDir are where the root device is looked up:
	// empty means /proc/self/mountinfo, /sys and /dev.
	MountInfo string
	SysDir    string
	DevDir    string
	// RootDevice, when set, is the device (or image file) holding the root
	// ext4 filesystem, and its size is its length; mountinfo and sysfs are
	// not read.
	RootDevice string
	// SetHostname sets the kernel's host name. Nil means unix.Sethostname.
	SetHostname func(name string) error
	// Netlink is the handle network changes go through. Nil means a handle
	// on the calling thread's network namespace.
	Netlink *netlink.Handle
	// LinkWait bounds how long to wait for the interface to appear (its
	// driver may still be loading). Zero means DefaultLinkWait.
	LinkWait time.Duration
	// Resize grows the ext4 filesystem on dev to fill it. Nil runs
	// "resize2fs <dev>" found on PATH; a missing resize2fs (or a hook
	// returning ErrNoResizeTool) skips the duty.
	Resize func(ctx context.Context, dev string) error
}

func (e *Env) fill() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&e.EtcDir, DefaultEtcDir)
	def(&e.RootHome, DefaultRootHome)
	def(&e.ReadyFile, DefaultReadyFile)
	def(&e.MountInfo, DefaultMountInfo)
	def(&e.SysDir, DefaultSysDir)
	def(&e.DevDir, DefaultDevDir)
	if e.SetHostname == nil {
		e.SetHostname = func(name string) error { return unix.Sethostname([]byte(name)) }
	}
	if e.LinkWait == 0 {
		e.LinkWait = DefaultLinkWait
	}
	if e.Resize == nil {
		e.Resize = resize2fs
	}
}

// Status is the outcome of one duty.
type Status string

// The outcomes of a duty.
const (
	StatusDone      Status = "done"      // the duty changed something
	StatusUnchanged Status = "unchanged" // everything already was as asked
	StatusSkipped   Status = "skipped"   // nothing asked for, or not possible here
	StatusFailed    Status = "failed"    // see Step.Err
)

// Duty names, in the order Apply reports them (network and grow run beside
// the others).
const (
	DutyHostname = "hostname"
	DutyNetwork  = "network"
	DutyDNS      = "dns"
	DutySSHKeys  = "ssh-keys"
	DutyGrow     = "grow"
	DutyReady    = "ready"
)

// Step is what one duty did.
type Step struct {
	Duty   string
	Status Status
	Detail string
	Err    error
}

func (s Step) String() string {
	line := fmt.Sprintf("%s: %s", s.Duty, s.Status)
	if s.Detail != "" {
		line += " (" + s.Detail + ")"
	}
	if s.Err != nil {
		line += ": " + s.Err.Error()
	}
	return line
}

// Report lists what Apply did, one step per duty, in order.
type Report struct {
	Steps []Step
}

// String is one line per step.
func (r Report) String() string {
	var b strings.Builder
	for _, s := range r.Steps {
		b.WriteString(strings.ReplaceAll(s.String(), "\n", "; "))
		b.WriteByte('\n')
	}
	return b.String()
}

// Failed returns the steps that failed.
func (r Report) Failed() []Step {
	var out []Step
	for _, s := range r.Steps {
		if s.Status == StatusFailed {
			out = append(out, s)
		}
	}
	return out
}

// Step returns the step of the named duty.
func (r Report) Step(duty string) (Step, bool) {
	for _, s := range r.Steps {
		if s.Duty == duty {
			return s, true
		}
	}
	return Step{}, false
}

// Apply carries out the boot duties for s: hostname, network, DNS, SSH keys,
// growing the root filesystem, and once they are all done the ready marker
// (which it removes first, so the marker means "this run is done"). The
// network and grow duties each run on a goroutine of their own, beside the
// others: they touch nothing the others do, and mostly wait on the kernel
// or on resize2fs. Hostname, DNS and SSH keys run in that order on the
// calling goroutine (the host name is set in the calling thread's UTS
// namespace, and the netlink socket, when env has none, is opened there
// too). The Report lists the steps in the order above. Each duty is idempotent and skipped when s
// does not ask for it. A failed duty does not stop the others: it is
// recorded in the Report, and the returned error joins every failure. A
// done ctx fails the duties not yet started.
func Apply(ctx context.Context, s Settings, env Env) (Report, error) {
	env.fill()
	var rep Report
	var errs []error
	record := func(duty string, st Status, detail string, err error) {
		if err != nil {
			st = StatusFailed
			errs = append(errs, fmt.Errorf("boot: %s: %w", duty, err))
		}
		rep.Steps = append(rep.Steps, Step{Duty: duty, Status: st, Detail: detail, Err: err})
	}
	// A failed removal shows up below: writing the marker fails the same way.
	_ = os.Remove(env.ReadyFile)
	duties := []struct {
		name   string
		run    func(context.Context, Settings, *Env) (Status, string, error)
		beside bool // runs on its own goroutine
	}{
		{DutyHostname, applyHostname, false},
		{DutyNetwork, applyNetwork, true},
		{DutyDNS, applyDNS, false},
		{DutySSHKeys, applySSHKeys, false},
		{DutyGrow, applyGrow, true},
	}
	if env.Netlink == nil && s.Networked() {
		// Opened here, the socket is in the caller's network namespace
		// whichever thread the network duty runs on. On failure the duty
		// tries again itself and reports why it cannot.
		if h, err := netlink.NewHandle(unix.NETLINK_ROUTE); err == nil {
			env.Netlink = h
			defer h.Close()
		}
	}
	type result struct {
		st     Status
		detail string
		err    error
	}
	results := make([]result, len(duties))
	runDuty := func(i int) {
		if err := ctx.Err(); err != nil {
			results[i] = result{StatusFailed, "", fmt.Errorf("not started: %w", err)}
			return
		}
		st, detail, err := duties[i].run(ctx, s, &env)
		results[i] = result{st, detail, err}
	}
	var wg sync.WaitGroup
	for i, d := range duties {
		if d.beside {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runDuty(i)
			}()
		}
	}
	for i, d := range duties {
		if !d.beside {
			runDuty(i)
		}
	}
	wg.Wait()
	for i, d := range duties {
		record(d.name, results[i].st, results[i].detail, results[i].err)
	}
	marker := fmt.Sprintf("done %s\n", time.Now().UTC().Format(time.RFC3339)) + rep.String()
	if err := os.MkdirAll(filepath.Dir(env.ReadyFile), 0o755); err != nil {
		record(DutyReady, StatusFailed, "", fmt.Errorf("create the directory of %s: %w", env.ReadyFile, err))
	} else if _, err := writeFileAtomic(env.ReadyFile, []byte(marker), 0o644, -1, -1); err != nil {
		record(DutyReady, StatusFailed, "", err)
	} else {
		record(DutyReady, StatusDone, env.ReadyFile, nil)
	}
	return rep, errors.Join(errs...)
}

// Ready reports whether the ready marker exists, i.e. whether a boot run
// has finished since the marker directory (a tmpfs in a systemd guest) was
// made.
func Ready(readyFile string) bool {
	if readyFile == "" {
		readyFile = DefaultReadyFile
	}
	_, err := os.Stat(readyFile)
	return err == nil
}

// joinChanges summarises which files a duty wrote.
func joinChanges(changed []string) (Status, string) {
	if len(changed) == 0 {
		return StatusUnchanged, ""
	}
	return StatusDone, "wrote " + strings.Join(changed, ", ")
}
