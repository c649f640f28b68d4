package qemuproc

import (
	"banger/internal/guest/proto"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the files QEMU uses in the per-VM runtime directory.
const (
	QMPSocketName   = "qmp.sock"
	AgentSocketName = "agent.sock"
	ConsoleLogName  = "console.log"
	LogName         = "qemu.log"

	// AgentPortName is the virtio-serial port name the guest looks for.
	AgentPortName = proto.SerialPortName
	// DefaultBinary is looked up on PATH when Config.Binary is empty.
	DefaultBinary = "qemu-system-x86_64"
	// KVMDevice is what Accel "auto" and "kvm" check.
	KVMDevice = "/dev/kvm"
)

// QMPSocketPath is Dir/qmp.sock.
func QMPSocketPath(dir string) string { return filepath.Join(dir, QMPSocketName) }

// AgentSocketPath is Dir/agent.sock.
func AgentSocketPath(dir string) string { return filepath.Join(dir, AgentSocketName) }

// ConsoleLogPath is Dir/console.log.
func ConsoleLogPath(dir string) string { return filepath.Join(dir, ConsoleLogName) }

// LogPath is Dir/qemu.log, QEMU's stdout and stderr.
func LogPath(dir string) string { return filepath.Join(dir, LogName) }

// Accel is a QEMU accelerator choice.
type Accel string

// Accelerators.
const (
	AccelAuto Accel = "auto" // KVM when /dev/kvm is usable, else TCG
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// Config describes one VM to start.
type Config struct {
	// Binary is the QEMU executable; empty means DefaultBinary on PATH.
	Binary string
	// Dir is the per-VM runtime directory (created if missing). It must be
	// absolute and short enough for Unix socket paths.
	Dir string
	// Kernel is an uncompressed x86_64 vmlinux; Initrd is optional.
	Kernel string
	Initrd string
	// Cmdline is the caller's kernel command line. Start appends
	// console=ttyS0 and, under TCG, tsc_early_khz=.
	Cmdline string
	// VCPUs and MemoryMiB default to 1 and 512 when zero.
	VCPUs     int
	MemoryMiB int
	// Drives are raw disk images; the first is the root disk (/dev/vda).
	Drives []Drive
	// Net is the network interface, if any.
	Net Net
	// Accel is "auto" (the default when empty), "kvm" or "tcg".
	Accel Accel
	// TSCkHz overrides the measured host TSC frequency used for
	// tsc_early_khz under TCG; 0 measures it.
	TSCkHz int
	// StartTimeout bounds the wait for the QMP monitor; 0 means 30 s.
	StartTimeout time.Duration
	// Timeouts bound the steps of Process.Stop; zero fields take defaults.
	Timeouts Timeouts
	// Incoming, when set, is a saved state (SaveState's file) that QEMU
	// loads instead of booting; the guest then runs on where it was saved.
	// The rest of the Config must be the saved VM's.
	Incoming string
	// Credential, when set, runs QEMU as that user and group (with those
	// supplementary groups). QEMU opens nothing of the VM's by path, so the
	// user needs no access to Dir or to the disks' directories.
	Credential *syscall.Credential
}

// Drive is one virtio-blk disk.
type Drive struct {
	Path     string
	ReadOnly bool
}

// Net selects the network interface: at most one of Tap and User.
type Net struct {
	Tap  *Tap
	User *User
}

// Tap attaches the VM to an existing tap device (created by the caller).
type Tap struct {
	Name string // interface name, at most 15 bytes
	MAC  string // guest MAC, e.g. "02:fc:00:00:00:01"; empty lets QEMU pick
}

// User is QEMU's user-mode network (slirp) with TCP forwards from the host.
type User struct {
	MAC      string
	Forwards []Forward
}

// Forward forwards TCP HostAddr:HostPort on the host to GuestPort in the
// guest.
type Forward struct {
	HostAddr  string // IPv4 address to listen on; empty means 127.0.0.1
	HostPort  int    // 0 picks a free port; Process.Forwards reports it
	GuestPort int
}

// Timeouts bound each step of Process.Stop.
type Timeouts struct {
	Graceful  time.Duration // the caller's hook and the wait after it; default 10 s
	Powerdown time.Duration // QMP system_powerdown and the wait after it; default 5 s
	Quit      time.Duration // QMP quit and the wait after it; default 5 s
	Kill      time.Duration // the wait after SIGKILL; default 5 s
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Graceful, 10*time.Second)
	def(&t.Powerdown, 5*time.Second)
	def(&t.Quit, 5*time.Second)
	def(&t.Kill, 5*time.Second)
	return t
}

// maxSocketPath is the longest path a Unix socket address holds.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// check validates c and fills in defaults. It touches nothing on disk
// except for looking at the input files.
func (c *Config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Dir == "":
		bad("no runtime directory (Config.Dir) given")
	case !filepath.IsAbs(c.Dir):
		bad("runtime directory %q is not an absolute path", c.Dir)
	case strings.Contains(c.Dir, ","):
		bad("runtime directory %q contains a comma, which QEMU's option syntax cannot take in a socket path; use another directory", c.Dir)
	case len(AgentSocketPath(c.Dir)) > maxSocketPath || len(QMPSocketPath(c.Dir)) > maxSocketPath:
		bad("runtime directory %q is too long: the socket paths in it exceed %d bytes; use a shorter directory", c.Dir, maxSocketPath)
	default:
		c.Dir = filepath.Clean(c.Dir)
	}
	if c.Kernel == "" {
		bad("no kernel (Config.Kernel) given")
	} else if err := regularFile(c.Kernel); err != nil {
		bad("kernel: %w", err)
	}
	if c.Initrd != "" {
		if err := regularFile(c.Initrd); err != nil {
			bad("initrd: %w", err)
		}
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.VCPUs < 0 || c.VCPUs > 255 {
		bad("vCPU count %d is out of range 1-255", c.VCPUs)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 512
	}
	if c.MemoryMiB < 16 {
		bad("memory %d MiB is too small; give at least 16 MiB", c.MemoryMiB)
	}
	for i, d := range c.Drives {
		if d.Path == "" {
			bad("drive %d has no path", i)
		} else if _, err := os.Stat(d.Path); err != nil {
			bad("drive %d: %w", i, err)
		}
	}
	if c.Accel == "" {
		c.Accel = AccelAuto
	}
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		bad("accelerator %q is not one of auto, kvm, tcg", c.Accel)
	}
	if c.TSCkHz < 0 {
		bad("TSC frequency %d kHz is negative", c.TSCkHz)
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	c.Timeouts = c.Timeouts.withDefaults()
	if err := c.Net.check(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func regularFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

func (n *Net) check() error {
	if n.Tap != nil && n.User != nil {
		return errors.New("network: both a tap device and user-mode networking given; choose one")
	}
	if t := n.Tap; t != nil {
		if t.Name == "" || len(t.Name) > 15 || strings.ContainsAny(t.Name, ",/ \t\n=:") {
			return fmt.Errorf("network: tap name %q is not a valid interface name (1-15 bytes, no separators)", t.Name)
		}
		if err := checkMAC(t.MAC); err != nil {
			return err
		}
	}
	if u := n.User; u != nil {
		if err := checkMAC(u.MAC); err != nil {
			return err
		}
		seen := map[string]bool{}
		for i := range u.Forwards {
			f := &u.Forwards[i]
			if f.HostAddr == "" {
				f.HostAddr = "127.0.0.1"
			}
			if ip := net.ParseIP(f.HostAddr); ip == nil || ip.To4() == nil {
				return fmt.Errorf("network: forward %d: host address %q is not an IPv4 address", i, f.HostAddr)
			}
			if f.HostPort < 0 || f.HostPort > 65535 {
				return fmt.Errorf("network: forward %d: host port %d is out of range 0-65535", i, f.HostPort)
			}
			if f.GuestPort < 1 || f.GuestPort > 65535 {
				return fmt.Errorf("network: forward %d: guest port %d is out of range 1-65535", i, f.GuestPort)
			}
			if f.HostPort != 0 {
				k := fmt.Sprintf("%s:%d", f.HostAddr, f.HostPort)
				if seen[k] {
					return fmt.Errorf("network: host address %s is forwarded twice", k)
				}
				seen[k] = true
			}
		}
	}
	return nil
}

func checkMAC(s string) error {
	if s == "" {
		return nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 || strings.Count(s, ":") != 5 {
		return fmt.Errorf("network: MAC address %q is not of the form 02:00:00:00:00:01", s)
	}
	if hw[0]&1 != 0 {
		return fmt.Errorf("network: MAC address %q is a multicast address; the first byte must be even", s)
	}
	return nil
}
