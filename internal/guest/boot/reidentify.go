package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/guest/proto"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Default locations of what Resume reads and writes besides Env's.
const (
	DefaultSSHDir      = "/etc/ssh"
	DefaultResumeState = "/run/banger/resumed"
	DefaultSSHDPidFile = "/run/sshd.pid"
)

// Duties of a resume, in the order Resume runs and reports them. Hostname,
// network and DNS are the boot duties of the same names.
const (
	DutyEntropy  = "entropy"
	DutyClock    = "clock"
	DutyHostKeys = "ssh-host-keys"
	DutySSHD     = "sshd"
)

// ResumeEnv is the part of the machine Resume works on. The zero value is
// the real guest; tests point the fields elsewhere and replace the hooks.
type ResumeEnv struct {
	// Env gives the /etc directory, the host-name setter and the netlink
	// handle, as at boot.
	Env
	// SSHDir holds the SSH host keys. Empty means /etc/ssh.
	SSHDir string
	// StateFile records the ID of the last resume applied. Empty means
	// /run/banger/resumed (a tmpfs: it is part of the snapshot's memory).
	StateFile string
	// SSHDPidFile is where a running sshd wrote its pid. Empty means
	// /run/sshd.pid.
	SSHDPidFile string
	// AddEntropy mixes seed into the kernel's random pool, credits it and
	// reseeds the kernel's generator. Nil means SystemAddEntropy.
	AddEntropy func(seed []byte) error
	// SetClock steps the real-time clock. Nil means SystemSetClock.
	SetClock func(time.Time) error
	// Now reads the guest's clock. Nil means time.Now.
	Now func() time.Time
	// SetMAC sets the Ethernet address of the interface. Nil sets it
	// through netlink (taking the link down and up when the driver
	// refuses a change while it is up).
	SetMAC func(h *netlink.Handle, link netlink.Link, mac net.HardwareAddr) error
	// ReloadSSHD makes a running sshd read its host keys again. It returns
	// false when no sshd runs. Nil means SIGHUP to the pid in SSHDPidFile.
	ReloadSSHD func() (bool, error)
}

func (e *ResumeEnv) fill() {
	e.Env.fill()
	if e.SSHDir == "" {
		e.SSHDir = DefaultSSHDir
	}
	if e.StateFile == "" {
		e.StateFile = DefaultResumeState
	}
	if e.SSHDPidFile == "" {
		e.SSHDPidFile = DefaultSSHDPidFile
	}
	if e.AddEntropy == nil {
		e.AddEntropy = SystemAddEntropy
	}
	if e.SetClock == nil {
		e.SetClock = SystemSetClock
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.SetMAC == nil {
		e.SetMAC = setMACNetlink
	}
	if e.ReloadSSHD == nil {
		pid := e.SSHDPidFile
		e.ReloadSSHD = func() (bool, error) { return ReloadSSHD(pid) }
	}
}

// Resumer returns the agent's resume hook (agent.Options.Resume): Resume
// with env, its error folded into the result's failed steps. Requests
// arriving together (the agent serves streams concurrently) run one after
// the other: two at once would interleave their host keys.
func Resumer(env ResumeEnv) func(context.Context, proto.ResumedRequest) proto.ResumedResult {
	var mu sync.Mutex
	return func(ctx context.Context, req proto.ResumedRequest) proto.ResumedResult {
		mu.Lock()
		defer mu.Unlock()
		res, _ := Resume(ctx, req, env)
		return res
	}
}

// Resume gives a clone resumed from a snapshot its own identity, in this
// order: the host's entropy into the kernel's pool and a reseed (first, so
// that everything after draws on it), the clock stepped to the host's time,
// the host name, the network (MAC, then the address, every other IPv4
// address of the interface removed, then the default route), DNS, new SSH
// host keys, and a reload of a running sshd. A failed duty does not stop
// the others; the result has one step per duty and the host public keys as
// they are now, and the error joins every failure.
//
// A request with the ID of the resume applied last keeps that resume's
// host keys and does not step the clock back, so that sending it again is
// harmless.
func Resume(ctx context.Context, req proto.ResumedRequest, env ResumeEnv) (proto.ResumedResult, error) {
	env.fill()
	var res proto.ResumedResult
	var errs []error
	record := func(duty string, st Status, detail string, err error) {
		step := proto.ResumedStep{Duty: duty, Status: string(st), Detail: detail}
		if err != nil {
			step.Status = string(StatusFailed)
			step.Error = err.Error()
			errs = append(errs, fmt.Errorf("resume: %s: %w", duty, err))
		}
		res.Steps = append(res.Steps, step)
	}
	if err := req.Validate(); err != nil {
		record("request", StatusFailed, "", err)
		return res, errors.Join(errs...)
	}
	repeat := lastResumeID(env.StateFile) == req.ID

	if err := env.AddEntropy(req.Entropy); err != nil {
		record(DutyEntropy, StatusFailed, "", fmt.Errorf("add %d bytes of the host's randomness to the kernel's pool: %w", len(req.Entropy), err))
	} else {
		record(DutyEntropy, StatusDone, fmt.Sprintf("%d bytes mixed in and credited, generator reseeded", len(req.Entropy)), nil)
	}
	record(stepClock(req, &env, repeat))

	if req.Hostname == "" {
		record(DutyHostname, StatusSkipped, "no host name in the request", nil)
	} else {
		st, detail, err := applyHostname(ctx, Settings{Hostname: req.Hostname}, &env.Env)
		record(DutyHostname, st, detail, err)
	}
	if n := req.Network; n != nil {
		st, detail, err := resumeNetwork(ctx, *n, &env)
		record(DutyNetwork, st, detail, err)
		if len(n.DNS) == 0 {
			record(DutyDNS, StatusSkipped, "no name servers in the request", nil)
		} else {
			st, detail, err = applyDNS(ctx, Settings{DNS: n.DNS}, &env.Env)
			record(DutyDNS, st, detail, err)
		}
	} else {
		record(DutyNetwork, StatusSkipped, "no network in the request", nil)
		record(DutyDNS, StatusSkipped, "no network in the request", nil)
	}

	keys, st, detail, err := renewHostKeys(req, &env, repeat)
	record(DutyHostKeys, st, detail, err)
	res.HostKeys = keys
	switch {
	case st != StatusDone:
		record(DutySSHD, StatusSkipped, "host keys unchanged", nil)
	default:
		running, err := env.ReloadSSHD()
		switch {
		case err != nil:
			record(DutySSHD, StatusFailed, "", fmt.Errorf("make sshd read its new host keys: %w", err))
		case !running:
			record(DutySSHD, StatusSkipped, "sshd is not running; it reads the new keys when it starts", nil)
		default:
			record(DutySSHD, StatusDone, "sent SIGHUP: sshd starts again with the new keys", nil)
		}
	}
	return res, errors.Join(errs...)
}

// stepClock steps the clock to the host's time. On a repeated request the
// clock is only stepped forward: the request's time is older than when it
// was first applied.
func stepClock(req proto.ResumedRequest, env *ResumeEnv, repeat bool) (string, Status, string, error) {
	want := req.Time()
	diff := want.Sub(env.Now())
	if repeat && diff <= 0 {
		return DutyClock, StatusUnchanged, "repeated resume: the clock is already past the request's time", nil
	}
	if err := env.SetClock(want); err != nil {
		return DutyClock, StatusFailed, "", fmt.Errorf("set the clock to %s: %w", want.UTC().Format(time.RFC3339Nano), err)
	}
	return DutyClock, StatusDone, fmt.Sprintf("stepped by %+v to %s", diff.Round(time.Millisecond), want.UTC().Format(time.RFC3339)), nil
}

// resumeNetwork sets the interface's MAC, removes every IPv4 address but
// the new one (a clone must not answer for its parent's address), then
// sets the address and the default route as the boot duty does.
func resumeNetwork(ctx context.Context, n proto.ResumedNetwork, env *ResumeEnv) (Status, string, error) {
	h := env.Netlink
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return StatusFailed, "", fmt.Errorf("open a netlink socket: %w", err)
		}
		defer h.Close()
	}
	link, err := waitLink(ctx, h, n.Iface, env.LinkWait)
	if err != nil {
		return StatusFailed, "", err
	}
	name := link.Attrs().Name
	var did []string
	if n.MAC != "" {
		mac, err := proto.ParseMAC(n.MAC)
		if err != nil {
			return StatusFailed, "", err
		}
		if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
			if err := env.SetMAC(h, link, mac); err != nil {
				return StatusFailed, "", fmt.Errorf("set the Ethernet address of %s to %s: %w", name, mac, err)
			}
			did = append(did, "mac "+mac.String())
		}
	}
	removed, err := removeOtherAddrs(h, link, n.Address)
	if err != nil {
		return StatusFailed, "", err
	}
	if len(removed) > 0 {
		did = append(did, "removed "+strings.Join(removed, ", "))
	}
	bootEnv := env.Env
	bootEnv.Netlink = h
	st, detail, err := applyNetwork(ctx, Settings{Addr: n.Address, Gateway: n.Gateway, Iface: name}, &bootEnv)
	if len(did) == 0 {
		return st, detail, err
	}
	if st == StatusUnchanged {
		st, detail = StatusDone, name
	}
	return st, detail + "; " + strings.Join(did, ", "), err
}

// removeOtherAddrs removes every IPv4 address of link but keep. Deleting
// an interface's primary address deletes its secondaries too (unless
// promote_secondaries is set): that is why the new address is put on after.
func removeOtherAddrs(h *netlink.Handle, link netlink.Link, keep netip.Prefix) ([]string, error) {
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list the addresses of %s: %w", link.Attrs().Name, err)
	}
	var removed []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if ok && netip.PrefixFrom(ip.Unmap(), ones) == keep {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return removed, fmt.Errorf("remove the old address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
		removed = append(removed, a.IPNet.String())
	}
	return removed, nil
}

// setMACNetlink sets link's Ethernet address; a driver that refuses while
// the link is up (EBUSY) gets it with the link down, then up again.
func setMACNetlink(h *netlink.Handle, link netlink.Link, mac net.HardwareAddr) error {
	err := h.LinkSetHardwareAddr(link, mac)
	if !errors.Is(err, unix.EBUSY) {
		return err
	}
	if err := h.LinkSetDown(link); err != nil {
		return fmt.Errorf("take the link down: %w", err)
	}
	err = h.LinkSetHardwareAddr(link, mac)
	if uerr := h.LinkSetUp(link); uerr != nil && err == nil {
		err = fmt.Errorf("bring the link up again: %w", uerr)
	}
	return err
}

// lastResumeID returns the ID the state file records, "" when none.
func lastResumeID(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

func writeResumeID(path, id string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create the directory of %s: %w", path, err)
	}
	_, err := writeFileAtomic(path, []byte(id+"\n"), 0o644, -1, -1)
	return err
}
