package fcproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/daemon/consolelog"
	"banger/internal/procwatch"

	"golang.org/x/sys/unix"
)

// Config describes one Firecracker VM to start.
type Config struct {
	// Name is Firecracker's instance id (--id): letters, digits and '-',
	// at most 64 characters.
	Name string
	// Binary is the firecracker executable; "firecracker" on PATH when empty.
	Binary string
	// Dir is the VM's own directory, which must exist. Sockets and logs go
	// there (see APISocketPath and friends).
	Dir       string
	Kernel    string // uncompressed vmlinux
	Initrd    string // optional
	BootArgs  string
	VCPUs     int // 1 to 32
	MemoryMiB int
	Drives    []DriveConfig
	Net       *NetConfig // nil: no network interface
	VsockCID  uint32     // 0: no vsock device; else at least 3
	Timeouts  Timeouts
	// Jail, when set, runs Firecracker under its jailer (jail.go): the
	// sockets in Dir are then symlinks to the ones in the chroot.
	Jail *Jail
	// Logger receives one debug record per step; nil discards.
	Logger *slog.Logger
	// FirecrackerLog sends Firecracker's own log to firecracker.log in Dir
	// (PUT /logger, level Info, levels shown). Off, no call is made and
	// Firecracker writes its log, at its default level, to its stdout:
	// console.log, between the guest's console lines, each line stamped
	// "[<id>:<thread>]".
	FirecrackerLog bool
	// Metrics has Firecracker write its JSON metrics to metrics.json in
	// Dir (PUT /metrics). Off, no call is made and Firecracker keeps no
	// metrics file; banger itself reads none.
	Metrics bool
}

// DriveConfig is one virtio-block drive.
type DriveConfig struct {
	ID       string // letters, digits and '_'
	Path     string
	ReadOnly bool
	Root     bool
}

// NetConfig is the VM's network interface, backed by an existing tap.
type NetConfig struct {
	Tap string // host tap device; must exist
	MAC string // guest MAC, e.g. 06:00:ac:10:00:02
}

// IfaceID is the id of the one network interface fcproc configures.
const IfaceID = "eth0"

// ErrKVM is matched (errors.Is) by the error Start returns when Firecracker
// could not use KVM, so a caller can offer QEMU instead.
var ErrKVM = errors.New("firecracker could not use KVM")

// KVMError is InstanceStart failing because KVM is unusable.
type KVMError struct {
	Fault string // Firecracker's fault_message
}

func (e *KVMError) Error() string {
	return fmt.Sprintf("start VM: Firecracker could not use KVM (%s): /dev/kvm is missing or not accessible — load the kvm module and give this user access to /dev/kvm, or use vmm = \"qemu\"", e.Fault)
}

// Is makes errors.Is(err, ErrKVM) true.
func (e *KVMError) Is(target error) bool { return target == ErrKVM }

// isKVMFault reports whether an InstanceStart fault message is about KVM
// itself (opening /dev/kvm, creating the VM) rather than the configuration.
func isKVMFault(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "kvm error") || strings.Contains(m, "/dev/kvm")
}

// StepError is a failed start step. The process, if spawned, has been
// killed and reaped and both sockets removed before it is returned.
type StepError struct {
	Step string
	Err  error
	PID  int // the Firecracker that was spawned and is now reaped; 0 if none
	// Steps traces the steps run, the failed one last.
	Steps []StepTrace
}

func (e *StepError) Error() string {
	var k *KVMError
	if errors.As(e.Err, &k) {
		return k.Error()
	}
	return fmt.Sprintf("start VM: step %s: %v", e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// Step names, in the order Start runs them.
const (
	StepRemoveStaleSockets = "remove-stale-sockets"
	StepCheckTap           = "check-tap"
	StepLinkDrives         = "link-drives"
	StepSpawn              = "spawn"
	StepWaitAPI            = "wait-api"
	StepPutLogger          = "put-logger"
	StepPutMetrics         = "put-metrics"
	StepPutMachineConfig   = "put-machine-config"
	StepPutBootSource      = "put-boot-source"
	StepPutDrives          = "put-drives"
	StepPutNetwork         = "put-network-interface"
	StepPutVsock           = "put-vsock"
	StepInstanceStart      = "instance-start"
)

type step struct {
	name string
	run  func(s *starter, ctx context.Context) error
}

// steps is the start chain. Every step after spawn talks to the process.
var steps = []step{
	{StepRemoveStaleSockets, (*starter).removeStaleSockets},
	{StepCheckTap, (*starter).checkTap},
	{StepLinkDrives, (*starter).linkDrives},
	{StepSpawn, (*starter).spawn},
	{StepWaitAPI, (*starter).waitAPI},
	{StepPutLogger, (*starter).putLogger},
	{StepPutMetrics, (*starter).putMetrics},
	{StepPutMachineConfig, (*starter).putMachineConfig},
	{StepPutBootSource, (*starter).putBootSource},
	{StepPutDrives, (*starter).putDrives},
	{StepPutNetwork, (*starter).putNetwork},
	{StepPutVsock, (*starter).putVsock},
	{StepInstanceStart, (*starter).instanceStart},
}

// StepNames lists the start steps in order.
func StepNames() []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.name
	}
	return out
}

// afterStep, when set (by tests only), runs after each step that succeeded.
var afterStep func(s *starter, step string)

// sysClassNet is where network devices are looked up; tests point it at a
// directory of their own.
var sysClassNet = "/sys/class/net"

// maxSunPath is the longest Unix socket path Linux accepts.
const maxSunPath = 107

var (
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	driveIDRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
)

func (c *Config) validate() error {
	if !nameRe.MatchString(c.Name) {
		return fmt.Errorf("VM name %q: Firecracker ids are 1 to 64 letters, digits or '-'", c.Name)
	}
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("VM directory %q: must be an absolute path", c.Dir)
	}
	if fi, err := os.Stat(c.Dir); err != nil {
		return fmt.Errorf("VM directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("VM directory %s: not a directory", c.Dir)
	}
	for _, s := range []string{APISocketPath(c.Dir), VsockPath(c.Dir) + "_4294967295"} {
		if len(s) > maxSunPath {
			return fmt.Errorf("VM directory %s: socket path %s is longer than %d bytes; use a shorter state directory", c.Dir, s, maxSunPath)
		}
	}
	if c.Kernel == "" {
		return errors.New("no kernel given")
	}
	if err := regularFile("kernel", c.Kernel); err != nil {
		return err
	}
	if c.Initrd != "" {
		if err := regularFile("initrd", c.Initrd); err != nil {
			return err
		}
	}
	if c.VCPUs < 1 || c.VCPUs > 32 {
		return fmt.Errorf("vcpus %d: Firecracker supports 1 to 32", c.VCPUs)
	}
	if c.MemoryMiB < 1 {
		return fmt.Errorf("memory %d MiB: must be positive", c.MemoryMiB)
	}
	ids := map[string]bool{}
	roots := 0
	for _, d := range c.Drives {
		if !driveIDRe.MatchString(d.ID) {
			return fmt.Errorf("drive id %q: use 1 to 64 letters, digits or '_'", d.ID)
		}
		if ids[d.ID] {
			return fmt.Errorf("drive id %q given twice", d.ID)
		}
		ids[d.ID] = true
		if d.Root {
			roots++
		}
		if err := regularFile("drive "+d.ID, d.Path); err != nil {
			return err
		}
	}
	if roots > 1 {
		return fmt.Errorf("%d drives are marked root; at most one can be", roots)
	}
	if c.Net != nil {
		if c.Net.Tap == "" || len(c.Net.Tap) > 15 || strings.ContainsAny(c.Net.Tap, "/ \t\n:") || c.Net.Tap == "." || c.Net.Tap == ".." {
			return fmt.Errorf("tap name %q: must be 1 to 15 characters without '/', ':' or spaces", c.Net.Tap)
		}
		if c.Net.MAC != "" {
			hw, err := net.ParseMAC(c.Net.MAC)
			if err != nil || len(hw) != 6 {
				return fmt.Errorf("guest MAC %q: not a 6-byte MAC address like 06:00:ac:10:00:02", c.Net.MAC)
			}
		}
	}
	if c.VsockCID == 1 || c.VsockCID == 2 {
		return fmt.Errorf("vsock CID %d: CIDs 0 to 2 are reserved; use 3 or more", c.VsockCID)
	}
	return nil
}

func regularFile(what, path string) error {
	if path == "" {
		return fmt.Errorf("%s: no path given", what)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, path)
	}
	return nil
}

// starter carries state between the steps of one Start.
type starter struct {
	cfg     Config
	t       Timeouts
	log     *slog.Logger
	apiSock string // host paths of the sockets
	vsock   string
	jail    *jailLayout // nil when not jailed
	jailArg []string
	proc    *Process
	spawnAt time.Time
}

// Start spawns Firecracker for cfg, configures it and boots the VM. On any
// failure the process is killed and reaped, both sockets are removed, and
// the error is a *StepError naming the step (whose message, when KVM is
// unusable, is the KVMError's; errors.Is(err, ErrKVM) then holds). ctx bounds
// the start only; the VM outlives it.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("start VM: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("vm", cfg.Name)
	s := &starter{
		cfg:     cfg,
		t:       cfg.Timeouts.withDefaults(),
		log:     log,
		apiSock: APISocketPath(cfg.Dir),
		vsock:   VsockPath(cfg.Dir),
	}
	if cfg.Jail != nil {
		// The jailer wants the binary's absolute path.
		bin := cfg.Binary
		if bin == "" {
			bin = "firecracker"
		}
		path, err := exec.LookPath(bin)
		if err != nil {
			return nil, fmt.Errorf("start VM: firecracker binary %q not found: install Firecracker or set firecracker_bin: %w", bin, err)
		}
		if cfg.Binary, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("start VM: %w", err)
		}
		s.cfg.Binary = cfg.Binary
		args, l, err := planJail(cfg, *cfg.Jail)
		if err != nil {
			return nil, fmt.Errorf("start VM: %w", err)
		}
		s.jail, s.jailArg = &l, args
		s.apiSock, s.vsock = l.APISock, l.Vsock
		log = log.With("jail", l.Root)
		s.log = log
	}
	var trace []StepTrace
	for _, st := range steps {
		t0 := time.Now()
		err := ctx.Err()
		if err == nil {
			err = st.run(s, ctx)
		}
		d := time.Since(t0)
		trace = append(trace, StepTrace{Name: st.name, Duration: d})
		if err != nil {
			log.Debug("firecracker start step failed", "step", st.name, "took", d, "err", err)
			pid := 0
			if s.proc != nil {
				pid = s.proc.PID
				if kerr := s.proc.kill(); kerr != nil {
					err = fmt.Errorf("%w; cleanup also failed: %v", err, kerr)
				}
			} else if s.jail != nil && st.name != StepRemoveStaleSockets {
				// Failed before a process ran: the chroot (maybe half made)
				// and the links to it go. A failed first step may have
				// found a live VM there, which keeps its chroot.
				if jerr := removeJail(cfg.Dir, filepath.Dir(s.jail.Root)); jerr != nil {
					err = fmt.Errorf("%w; cleanup also failed: %v", err, jerr)
				}
			}
			return nil, &StepError{Step: st.name, Err: err, PID: pid, Steps: trace}
		}
		log.Debug("firecracker start step", "step", st.name, "took", d)
		if afterStep != nil {
			afterStep(s, st.name)
		}
	}
	s.proc.Steps = trace
	log.Debug("firecracker started", "pid", s.proc.PID, "config_duration", s.proc.ConfigDuration)
	return s.proc, nil
}

func (s *starter) removeStaleSockets(ctx context.Context) error {
	// A live Firecracker on this socket is a VM we must not orphan.
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	if c, err := d.DialContext(ctx, "unix", s.apiSock); err == nil {
		c.Close()
		return fmt.Errorf("a process is still serving %s: stop that VM first", s.apiSock)
	}
	stale := []string{s.apiSock, s.vsock}
	if s.jail != nil {
		stale = append(stale, APISocketPath(s.cfg.Dir), VsockPath(s.cfg.Dir))
	}
	for _, p := range stale {
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", p, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory, not a stale socket: remove it by hand", p)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", p, err)
		}
	}
	return nil
}

func (s *starter) checkTap(context.Context) error {
	if s.cfg.Net == nil {
		return nil
	}
	tap := s.cfg.Net.Tap
	dev := filepath.Join(sysClassNet, tap)
	if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tap device %q does not exist (Firecracker would silently create an unconfigured one): create it before starting the VM", tap)
	} else if err != nil {
		return fmt.Errorf("check tap device %q: %w", tap, err)
	}
	if _, err := os.Stat(filepath.Join(dev, "tun_flags")); err != nil {
		return fmt.Errorf("network device %q is not a tap device: give the VM a tap", tap)
	}
	if j := s.cfg.Jail; j != nil && !tapOpenableBy(dev, j.UID, j.GID) {
		// The jailed Firecracker has no capabilities: the tap must be
		// its uid's. The jailer needs root, so hand the tap over.
		if err := handTap(tap, dev, j.UID, j.GID); err != nil || !tapOpenableBy(dev, j.UID, j.GID) {
			return fmt.Errorf("tap device %q is not owned by the jail's uid %d or gid %d and could not be handed over (%v): the jailed Firecracker, which has no capabilities, could not open it; create the tap with that owner", tap, j.UID, j.GID, err)
		}
		s.log.Debug("tap handed to the jail's uid", "tap", tap, "uid", j.UID)
	}
	return nil
}

// handTap makes the persistent tap name (dev is its /sys/class/net entry)
// uid's and gid's: it attaches to it with the flags it was made with and
// sets its owner and group. It needs CAP_NET_ADMIN.
func handTap(name, dev string, uid, gid uint32) error {
	b, err := os.ReadFile(filepath.Join(dev, "tun_flags"))
	if err != nil {
		return err
	}
	flags, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 16)
	if err != nil {
		return fmt.Errorf("tun_flags %q: %w", b, err)
	}
	const keep = unix.IFF_TUN | unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(uint16(flags) & keep)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, int(uid)); err != nil {
		return fmt.Errorf("set owner: %w", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, int(gid)); err != nil {
		return fmt.Errorf("set group: %w", err)
	}
	return nil
}

// tapOpenableBy reports whether a process without CAP_NET_ADMIN running as
// uid and gid may attach to the tap dev (/sys/class/net/NAME): the tap's
// owner or group must be theirs.
func tapOpenableBy(dev string, uid, gid uint32) bool {
	read := func(name string) (int64, bool) {
		b, err := os.ReadFile(filepath.Join(dev, name))
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v, err == nil
	}
	if o, ok := read("owner"); ok && o == int64(uid) {
		return true
	}
	g, ok := read("group")
	return ok && g == int64(gid)
}

func (s *starter) spawn(context.Context) error {
	bin := s.cfg.Binary
	if bin == "" {
		bin = "firecracker"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("firecracker binary %q not found: install Firecracker or set firecracker_bin: %w", bin, err)
	}
	// Appending, so that a rotation that truncates the log in place
	// (consolelog) is followed by Firecracker's next write.
	console, err := os.OpenFile(ConsoleLogPath(s.cfg.Dir), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	defer console.Close() // the child has its own copy
	cmd := exec.Command(path, spawnArgs(s.apiSock, s.cfg.Name)...)
	if s.jail != nil {
		if cmd, err = s.jailCmd(console); err != nil {
			return err
		}
	}
	cmd.Dir = s.cfg.Dir
	cmd.Stdout = console
	cmd.Stderr = console
	// Its own process group: a terminal's Ctrl-C or a signal to the
	// daemon's group does not reach the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// ConfigDuration counts from here: the fork and exec are part of it.
	s.spawnAt = time.Now()
	// Held by a pidfd from the clone on, and reaped by its handle.
	h, err := procwatch.Start(cmd)
	if err != nil {
		return fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	s.proc = spawned(h, s.cfg.Dir, s.t, s.log)
	if s.jail != nil {
		s.proc.jailDir = filepath.Dir(s.jail.Root)
		s.proc.Jailed = true
	}
	return nil
}

// spawnArgs is Firecracker's argv. It never carries --no-seccomp or
// --seccomp-filter: Firecracker's own default seccomp filters, one per
// thread kind, always apply.
func spawnArgs(apiSock, name string) []string {
	return []string{"--api-sock", apiSock, "--id", name}
}

// The wait for a fresh API socket retries a connect after apiPollMin,
// doubling the pause up to apiPollMax: Firecracker listens about 1 to 2 ms
// after its exec, so the first tries come often and cost little (a failed
// connect on a Unix socket is a few microseconds), and a slow start is not
// hammered.
const (
	apiPollMin = 50 * time.Microsecond
	apiPollMax = 2 * time.Millisecond
)

// waitAPI waits until Firecracker accepts connections on its API socket.
// A successful connect is enough: Firecracker binds and listens before it
// serves, and a request sent at once waits in the socket until it does, so
// the first configuration call is the readiness check (no GET / first).
func (s *starter) waitAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.t.APISocket)
	defer cancel()
	var lastErr error
	var d net.Dialer
	pause := apiPollMin
	t := time.NewTimer(time.Hour) // armed with each pause below
	defer t.Stop()
	for {
		c, err := d.DialContext(ctx, "unix", s.apiSock)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		t.Reset(pause)
		select {
		case <-s.proc.Done():
			return fmt.Errorf("firecracker exited before its API socket answered (%v)%s", s.proc.proc.ExitErr(), consoleTail(ConsoleLogPath(s.cfg.Dir)))
		case <-ctx.Done():
			if errors.Is(lastErr, os.ErrNotExist) || errors.Is(lastErr, syscall.ENOENT) {
				lastErr = fmt.Errorf("%s was never created", s.apiSock)
			}
			return fmt.Errorf("API socket did not answer within %s: %v%s", s.t.APISocket, lastErr, consoleTail(ConsoleLogPath(s.cfg.Dir)))
		case <-t.C:
		}
		pause = min(2*pause, apiPollMax)
	}
}

func (s *starter) putLogger(ctx context.Context) error {
	if !s.cfg.FirecrackerLog {
		return nil
	}
	show := true
	p := LogPath(s.cfg.Dir)
	if s.jail != nil {
		p = s.jail.Log
	}
	return s.proc.client.PutLogger(ctx, Logger{LogPath: p, Level: "Info", ShowLevel: &show})
}

func (s *starter) putMetrics(ctx context.Context) error {
	if !s.cfg.Metrics {
		return nil
	}
	p := MetricsPath(s.cfg.Dir)
	if s.jail != nil {
		p = s.jail.Metrics
	}
	return s.proc.client.PutMetrics(ctx, Metrics{MetricsPath: p})
}

func (s *starter) putMachineConfig(ctx context.Context) error {
	return s.proc.client.PutMachineConfig(ctx, MachineConfig{VCPUCount: s.cfg.VCPUs, MemSizeMiB: s.cfg.MemoryMiB})
}

func (s *starter) putBootSource(ctx context.Context) error {
	kernel, initrd := s.cfg.Kernel, s.cfg.Initrd
	if s.jail != nil {
		kernel, initrd = s.jail.Kernel, s.jail.Initrd
	}
	return s.proc.client.PutBootSource(ctx, BootSource{
		KernelImagePath: kernel,
		InitrdPath:      initrd,
		BootArgs:        s.cfg.BootArgs,
	})
}

// linkDrives makes DriveLinkName(id) in the VM's directory a symlink to
// each drive's file (replacing one a former start left), for an unjailed
// Firecracker, which is given the relative names. A jail links its own.
func (s *starter) linkDrives(context.Context) error {
	if s.jail != nil {
		return nil
	}
	for _, d := range s.cfg.Drives {
		target, err := filepath.Abs(d.Path)
		if err != nil {
			return fmt.Errorf("drive %s: %w", d.ID, err)
		}
		link := filepath.Join(s.cfg.Dir, DriveLinkName(d.ID))
		tmp := link + ".new"
		_ = os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return fmt.Errorf("link drive %s (%s) into %s: %w", d.ID, d.Path, s.cfg.Dir, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("link drive %s (%s) into %s: %w", d.ID, d.Path, s.cfg.Dir, err)
		}
	}
	return nil
}

func (s *starter) putDrives(ctx context.Context) error {
	for _, d := range s.cfg.Drives {
		path := DriveLinkName(d.ID) // relative to Firecracker's directory, the VM's
		if s.jail != nil {
			path = s.jail.Drives[d.ID]
		}
		err := s.proc.client.PutDrive(ctx, Drive{
			DriveID:      d.ID,
			PathOnHost:   path,
			IsRootDevice: d.Root,
			IsReadOnly:   d.ReadOnly,
			// Firecracker's default, Unsafe, drops the guest's flushes;
			// Writeback passes them on to the file, as QEMU does, so what
			// the guest syncs survives a host crash.
			CacheType: "Writeback",
		})
		if err != nil {
			return fmt.Errorf("drive %s (%s): %w", d.ID, d.Path, err)
		}
	}
	return nil
}

func (s *starter) putNetwork(ctx context.Context) error {
	if s.cfg.Net == nil {
		return nil
	}
	return s.proc.client.PutNetworkInterface(ctx, NetworkInterface{
		IfaceID:     IfaceID,
		HostDevName: s.cfg.Net.Tap,
		GuestMAC:    s.cfg.Net.MAC,
	})
}

func (s *starter) putVsock(ctx context.Context) error {
	if s.cfg.VsockCID == 0 {
		return nil
	}
	uds := VsockSocketName // relative to Firecracker's directory, the VM's
	if s.jail != nil {
		uds = jailVsock
	}
	return s.proc.client.PutVsock(ctx, Vsock{GuestCID: s.cfg.VsockCID, UDSPath: uds})
}

func (s *starter) instanceStart(ctx context.Context) error {
	s.proc.ConfigDuration = time.Since(s.spawnAt)
	if s.jail != nil {
		// Firecracker has bound both its sockets. Before any guest code
		// runs, the chroot's /run becomes root's again, so a Firecracker
		// the guest takes over cannot swap a socket bangerd dials for a
		// symlink to another one.
		if err := s.jail.lockRun(); err != nil {
			return err
		}
	}
	err := s.proc.client.InstanceStart(ctx)
	var apiErr *APIError
	if errors.As(err, &apiErr) && isKVMFault(apiErr.FaultMessage) {
		return &KVMError{Fault: apiErr.FaultMessage}
	}
	return err
}

// consoleTail returns the last lines of the console log, sanitized, formatted
// to end an error message, or "" when there is nothing to show.
func consoleTail(path string) string {
	lines := consolelog.Tail(path, 5)
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("; last lines of %s:\n  %s", path, strings.Join(lines, "\n  "))
}
