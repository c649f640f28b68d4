package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/consolelog"
	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/qemuproc"
	"banger/internal/daemon/sshkey"
	"banger/internal/daemon/workspace"
	"banger/internal/guest/boot"
	"banger/internal/guest/client"
	"banger/internal/keylock"
	"banger/internal/store"
)

// Bounds of the VM lifecycle.
const (
	bootTimeoutKVM = 60 * time.Second
	bootTimeoutTCG = 180 * time.Second
	stopTimeout    = 30 * time.Second
)

// QEMU user-mode networking's fixed addresses, given to the guest agent so
// the guest needs no DHCP client.
const (
	userNetIP  = "10.0.2.15/24"
	userNetGW  = "10.0.2.2"
	userNetDNS = "10.0.2.3"
)

// vmManager runs the VM lifecycle: create, start, stop, remove, and the
// reconciliation of what the store says with what runs after a restart.
type vmManager struct {
	cfg    config.Config
	st     *store.Store
	images *imagemgr.Manager
	ws     *workspace.Manager
	log    *slog.Logger

	net  *network
	priv *privileged
	// qemuNoKVM holds why QEMU could not use this host's KVM, once seen.
	qemuNoKVM atomic.Pointer[string]

	mu    sync.Mutex
	live  map[string]*liveVM // by VM id
	locks keylock.Map
	users vmmUsers

	// bg ends when the manager shuts down: the watchers of running VMs
	// (which keep their logs bounded) stop then.
	bg     context.Context
	bgStop context.CancelFunc
}

type liveVM struct {
	m     machine
	agent *agentLink
}

func newVMManager(cfg config.Config, st *store.Store, images *imagemgr.Manager, log *slog.Logger) *vmManager {
	priv := newPrivileged(cfg.HelperSocket, cfg.StateDir)
	bg, bgStop := context.WithCancel(context.Background())
	return &vmManager{cfg: cfg, st: st, images: images, ws: workspace.New(cfg.StateDir), log: log, live: map[string]*liveVM{},
		priv: priv, bg: bg, bgStop: bgStop,
		net: &network{cfgMode: cfg.Network, hosts: cfg.HostsFile, st: st, log: log, priv: priv,
			bridge: netmgr.Config{Bridge: cfg.BridgeName, Subnet: cfg.BridgeSubnet, DNSPort: bridgeDNSPort()}}}
}

// vmInputError marks a bad request; nothing was changed.
type vmInputError struct{ error }

func (e vmInputError) Unwrap() error { return e.error }

func inputf(format string, args ...any) error { return vmInputError{fmt.Errorf(format, args...)} }

// CreateRequest describes a new VM.
type CreateRequest struct {
	Name    string
	Image   string
	VCPUs   int
	Memory  int64
	Disk    int64
	VMM     string
	COW     string
	Publish []string // "HOSTPORT:GUESTPORT"
	// StartNow says the VM is started right after it is made (vm run): its
	// disks are then not flushed at create, since the guest's first flush,
	// which both VMMs pass on to the file, makes them durable.
	StartNow bool
	publish  string // normalised by validate
}

func randomName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "vm-" + hex.EncodeToString(b[:])
}

func newVMID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validate fills defaults and checks a create request without side effects.
func (vm *vmManager) validate(r *CreateRequest) error {
	if r.Name == "" {
		r.Name = randomName()
	}
	if err := imagemgr.ValidName("VM", r.Name); err != nil {
		return vmInputError{err}
	}
	if r.Image == "" {
		r.Image = vm.cfg.DefaultImageName
	}
	if r.VCPUs == 0 {
		r.VCPUs = vm.cfg.DefaultVCPUs
	}
	if r.VCPUs < 1 || r.VCPUs > 64 {
		return inputf("--cpus %d is outside 1 to 64", r.VCPUs)
	}
	if r.Memory == 0 {
		r.Memory = int64(vm.cfg.DefaultMemory)
	}
	if r.Memory < 128<<20 {
		return inputf("--memory %s is below 128MiB", config.Size(r.Memory))
	}
	if r.Disk == 0 {
		r.Disk = int64(vm.cfg.DefaultDiskSize)
	}
	if r.VMM == "" {
		r.VMM = vm.cfg.VMM
	}
	switch r.VMM {
	case "auto", vmmFirecracker, vmmQEMU:
	default:
		return inputf("unknown vmm %q: use auto, firecracker or qemu", r.VMM)
	}
	if r.COW == "" {
		r.COW = vm.cfg.COW
	}
	pub, err := checkPublish(r.Publish)
	if err != nil {
		return err
	}
	r.publish = pub
	return nil
}

// Create makes a VM: its image and kernel (pulled on a miss), its directory
// and its copy-on-write root disk. On failure nothing is left.
func (vm *vmManager) Create(ctx context.Context, r CreateRequest, p imagemgr.Progress) (store.VM, error) {
	if err := vm.validate(&r); err != nil {
		return store.VM{}, err
	}
	unlock := vm.locks.MustLock("name/" + r.Name)
	defer unlock()
	if _, err := vm.st.GetVM(ctx, r.Name); err == nil {
		return store.VM{}, vmInputError{fmt.Errorf("VM %q already exists: pick another name, or remove it (banger vm rm %s)", r.Name, r.Name)}
	}
	im, err := vm.image(ctx, r.Image, p)
	if err != nil {
		return store.VM{}, err
	}
	if im.KernelRef == "" {
		return store.VM{}, noKernelError(im)
	}
	// A registered image's files are the user's, and may have been replaced
	// since register checked them.
	if err := vm.images.CheckFiles(im); err != nil {
		return store.VM{}, vmInputError{err}
	}
	k, err := vm.kernel(ctx, im.KernelRef, p)
	if err != nil {
		return store.VM{}, err
	}
	id := newVMID()
	dir, err := vm.ws.Create(id)
	if err != nil {
		return store.VM{}, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = vm.ws.Remove(id)
		}
	}()
	p.Phase("making the root disk")
	disk, used, err := vm.makeRootDisk(ctx, r, im, dir, p)
	if err != nil {
		return store.VM{}, err
	}
	if im.WorkSeedPath != "" {
		p.Phase("seeding the work disk")
		fileCOW := r.COW
		if fileCOW == workspace.DMSnap {
			fileCOW = workspace.Auto
		}
		if _, err := workspace.CloneDisk(ctx, im.WorkSeedPath, filepath.Join(dir, workDiskName), fileCOW, workspace.CloneOptions{NoSync: r.StartNow}); err != nil {
			return store.VM{}, fmt.Errorf("seed the work disk of %s: %w", r.Name, err)
		}
	}
	now := time.Now().UTC()
	v := store.VM{ID: id, Name: r.Name, ImageID: im.ID, KernelID: k.ID, VCPUs: r.VCPUs, MemoryBytes: r.Memory,
		DiskBytes: r.Disk, State: store.VMCreated, VMMKind: r.VMM, COWKind: used, COWDevice: disk,
		Publish: r.publish, CreatedAt: now, UpdatedAt: now}
	if err := vm.st.PutVM(ctx, v); err != nil {
		return store.VM{}, err
	}
	ok = true
	if err := vm.ws.Commit(id); err != nil {
		vm.log.Warn("VM created", "vm", v.Name, "error", err)
	}
	return v, nil
}

// noKernelError says what to do about an image that names no kernel, for
// the kind of image it is: banger has no command that changes an image's
// kernel, so it is made again with one.
func noKernelError(im store.Image) error {
	switch {
	case im.OriginKind == store.OriginOCI:
		return inputf("image %q names no kernel: it was pulled by an older banger; remove it (banger image rm %s) and pull it again with its kernel (banger image pull %s --name %s --kernel NAME; without --kernel it gets the default image's kernel)",
			im.Name, im.Name, im.OriginRef, im.Name)
	case im.OriginKind == store.OriginCatalog:
		return inputf("image %q names no kernel: remove it (banger image rm %s) and pull it again", im.Name, im.Name)
	case !im.Managed:
		return inputf("image %q names no kernel: remove it (banger image rm %s; your files stay) and register it again with --kernel NAME (banger kernel ls lists kernels)", im.Name, im.Name)
	}
	return inputf("image %q names no kernel: copy its rootfs (%s) out of the state dir and register the copy with --kernel NAME (banger kernel ls lists kernels); removing the image deletes that file", im.Name, im.RootfsPath)
}

// workDiskName is the VM's second disk, seeded from the image's work-seed;
// the guest sees it as /dev/vdb.
const workDiskName = "work.ext4"

// makeRootDisk gives the VM its writable root: a device-mapper snapshot
// over the image (its copy-on-write store is made at start), or a reflink
// clone or sparse copy grown to the requested size. auto takes dmsnap when
// this host has device-mapper, as the fastest on ext4.
func (vm *vmManager) makeRootDisk(ctx context.Context, r CreateRequest, im store.Image, dir string, p imagemgr.Progress) (path, used string, err error) {
	useDM := false
	switch r.COW {
	case workspace.DMSnap:
		if err := vm.snapshotsAvailable(ctx); err != nil {
			return "", "", inputf("cow = dmsnap: %v; or use cow = auto, reflink or copy", err)
		}
		useDM = true
	case workspace.Auto, "":
		useDM = vm.snapshotsAvailable(ctx) == nil
	}
	if useDM {
		if r.Disk > im.SizeBytes && im.SizeBytes > 0 {
			p.Phase(fmt.Sprintf("dmsnap: the root disk keeps the image's size (%s); --disk sets the room for changes", config.Size(im.SizeBytes)))
		}
		return filepath.Join(dir, "root.cow"), workspace.DMSnap, nil
	}
	disk := filepath.Join(dir, "root.ext4")
	strategy := r.COW
	if strategy == "" {
		strategy = workspace.Auto
	}
	used, err = workspace.CloneDisk(ctx, im.RootfsPath, disk, strategy, workspace.CloneOptions{Size: r.Disk, NoSync: r.StartNow})
	if err != nil {
		return "", "", fmt.Errorf("make the root disk of %s: %w", r.Name, err)
	}
	return disk, used, nil
}

// snapshotName is a VM's dm snapshot: under this daemon's uid, since dm
// names are shared by every user of the host (and the helper insists).
func snapshotName(id string) string { return snapshotPrefix() + id }

func snapshotPrefix() string { return privhelper.SnapshotPrefix(uint32(os.Getuid())) }

// snapshotsAvailable says why dm snapshots cannot be made (no way to root,
// or no device-mapper), or nil.
func (vm *vmManager) snapshotsAvailable(ctx context.Context) error {
	ops, err := vm.priv.disks(ctx, vm.cfg.StateDir)
	if err != nil {
		return err
	}
	return ops.SnapshotsAvailable(ctx)
}

// rootDevice returns the path the VMM opens as /dev/vda, setting up the
// dm snapshot of a dmsnap VM.
func (vm *vmManager) rootDevice(ctx context.Context, v store.VM, im store.Image) (string, error) {
	if v.COWKind != workspace.DMSnap {
		return v.COWDevice, nil
	}
	// The snapshot reads the image's rootfs at every start: check a user's
	// file again, as create did.
	if err := vm.images.CheckFiles(im); err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	ops, err := vm.priv.disks(ctx, vm.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	snap, err := ops.CreateSnapshot(ctx, snapshotName(v.ID), im.RootfsPath, v.COWDevice, v.DiskBytes)
	if err != nil {
		return "", fmt.Errorf("set up the root snapshot of %s: %w", v.Name, err)
	}
	return snap.Device, nil
}

// releaseRoot tears a dmsnap VM's snapshot down (its COW file stays).
func (vm *vmManager) releaseRoot(ctx context.Context, v store.VM) {
	if v.COWKind != workspace.DMSnap {
		return
	}
	ops, err := vm.priv.get(ctx)
	if err == nil {
		err = ops.RemoveSnapshot(ctx, snapshotName(v.ID))
	}
	if err != nil {
		vm.log.Warn("remove the root snapshot", "vm", v.Name, "error", err)
	}
}

// drives lists the VM's extra disks after the root.
func (vm *vmManager) extraDisks(v store.VM) []string {
	work := filepath.Join(vm.ws.Dir(v.ID), workDiskName)
	if _, err := os.Stat(work); err == nil {
		return []string{work}
	}
	return nil
}

func (vm *vmManager) image(ctx context.Context, name string, p imagemgr.Progress) (store.Image, error) {
	im, err := vm.images.Image(ctx, name)
	if err == nil {
		return im, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Image{}, err
	}
	if !vm.images.IsCatalogImage(name) {
		return store.Image{}, vmInputError{fmt.Errorf("image %q not found: pull it (banger image pull %s) or register one", name, name)}
	}
	p.Phase("pulling image " + name)
	return vm.images.PullImage(ctx, name, imagemgr.PullOptions{}, p)
}

func (vm *vmManager) kernel(ctx context.Context, name string, p imagemgr.Progress) (store.Kernel, error) {
	k, err := vm.images.Kernel(ctx, name)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Kernel{}, err
	}
	p.Phase("pulling kernel " + name)
	return vm.images.PullKernel(ctx, name, p)
}

// runDir is where a VM's sockets and logs live while it runs: under the
// runtime dir, whose paths are short enough for Unix sockets.
func (vm *vmManager) runDir(id string) string { return filepath.Join(vm.cfg.RuntimeDir, "vms", id) }

func (vm *vmManager) knownHosts(id string) string {
	return filepath.Join(vm.ws.Dir(id), "known_hosts")
}

// Start boots a created or stopped VM and waits until its agent is ready.
func (vm *vmManager) Start(ctx context.Context, name, vmmOverride string, p imagemgr.Progress) (store.VM, error) {
	v, err := vm.st.GetVM(ctx, name)
	if err != nil {
		return store.VM{}, err
	}
	unlock := vm.locks.MustLock(v.ID)
	defer unlock()
	if v, err = vm.st.GetVM(ctx, name); err != nil {
		return store.VM{}, err
	}
	if vm.isLive(v.ID) {
		return store.VM{}, inputf("VM %q is already %s", name, v.State)
	}
	want := v.VMMKind
	if vmmOverride != "" {
		want = vmmOverride
	}
	kind, reason, err := chooseVMM(want, vm.cfg.FirecrackerBin)
	if err != nil {
		return store.VM{}, vmInputError{err}
	}
	k, err := vm.st.GetKernelByID(ctx, v.KernelID)
	if err != nil {
		return store.VM{}, fmt.Errorf("kernel of VM %q: %w", name, err)
	}
	im, err := vm.st.GetImageByID(ctx, v.ImageID)
	if err != nil {
		return store.VM{}, fmt.Errorf("image of VM %q: %w", name, err)
	}
	pub, err := sshkey.Ensure(vm.cfg.SSHKeyPath)
	if err != nil {
		return store.VM{}, err
	}
	dir := vm.runDir(v.ID)
	// A VMM of this VM that should have exited but did not (stuck in its
	// teardown) still has the disk open: a second one beside it would
	// corrupt it.
	if n := killStrays(dir); n > 0 {
		vm.log.Warn("killed a VMM of this VM that was still running", "vm", v.Name, "count", n)
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return store.VM{}, err
	}
	params := []string{"root=/dev/vda", "rw", "panic=-1", "banger.hostname=" + v.Name, "banger.ssh_key=" + boot.EncodeSSHKey(pub)}
	if im.OriginKind == store.OriginOCI {
		params = append(params, "init="+OCIInit)
	}
	netMode, err := vm.net.mode(ctx)
	if err != nil {
		os.RemoveAll(dir)
		return store.VM{}, vmInputError{err}
	}
	v.State, v.VMMKind, v.VMMReason, v.RunDir, v.LastError = store.VMStarting, kind, reason, dir, ""
	v.Network, v.IP, v.Tap, v.MAC = netMode, "", "", ""
	v.UpdatedAt = time.Now().UTC()
	if err := vm.st.PutVM(ctx, v); err != nil {
		os.RemoveAll(dir)
		return store.VM{}, err
	}
	root, err := vm.rootDevice(ctx, v, im)
	if err != nil {
		return vm.failStart(ctx, v, err)
	}
	extra := vm.extraDisks(v)
	var att netmgr.Attachment
	if netMode == netBridge {
		p.Phase("attaching to bridge " + vm.cfg.BridgeName)
		if att, err = vm.net.attach(ctx, v); err != nil {
			return vm.failStart(ctx, v, err)
		}
		dns := make([]string, 0, len(att.DNS))
		for _, d := range att.DNS {
			dns = append(dns, d.String())
		}
		params = append(params, "banger.ip="+att.IP.String(), "banger.gw="+att.Gateway.String())
		if len(dns) > 0 {
			params = append(params, "banger.dns="+strings.Join(dns, ","))
		}
		v.IP, v.Tap, v.MAC = att.IP.Addr().String(), att.Tap, att.MAC.String()
	} else if kind == vmmFirecracker {
		p.Phase("no bridged network (network = user): this Firecracker VM is reached through its agent only")
	}
	p.Phase(fmt.Sprintf("starting %s (%s)", kind, reason))
	var m machine
	var link *agentLink
	bootTimeout := bootTimeoutKVM
	switch kind {
	case vmmQEMU:
		params = append(params, "banger.transport=serial")
		qnet := qemuproc.Net{Tap: &qemuproc.Tap{Name: att.Tap, MAC: v.MAC}}
		if netMode == netUser {
			params = append(params, "banger.ip="+userNetIP, "banger.gw="+userNetGW, "banger.dns="+userNetDNS)
			fwd := []qemuproc.Forward{{GuestPort: 22}}
			for _, pp := range parsePublish(v.Publish) {
				fwd = append(fwd, qemuproc.Forward{HostPort: pp.host, GuestPort: pp.guest})
			}
			qnet = qemuproc.Net{User: &qemuproc.User{Forwards: fwd}}
		}
		qcfg := qemuproc.Config{
			Binary: vm.cfg.QemuBin, Dir: dir, Kernel: k.VmlinuxPath, Initrd: k.InitrdPath,
			Cmdline: strings.Join(params, " "), VCPUs: v.VCPUs, MemoryMiB: int(v.MemoryBytes >> 20),
			Drives: qemuDrives(root, extra),
			Net:    qnet,
		}
		cred, release, err := vm.users.credential(v.ID)
		if err != nil {
			return vm.failStart(ctx, v, err)
		}
		defer release()
		qcfg.Credential = cred
		if why := vm.qemuNoKVM.Load(); why != nil {
			qcfg.Accel = qemuproc.AccelTCG
			reason += "; " + *why
			v.VMMReason = reason
		}
		qp, err := qemuproc.Start(ctx, qcfg)
		if err != nil && qcfg.Accel != qemuproc.AccelTCG && kvmUsable() == nil && ctx.Err() == nil {
			// Some hosts expose /dev/kvm that QEMU cannot drive (nested
			// virtualisation missing MSRs): fall back to TCG, say so, and
			// remember it for this daemon's later starts.
			vm.log.Warn("QEMU failed with KVM; retrying under TCG", "vm", v.Name, "error", err)
			qcfg.Accel = qemuproc.AccelTCG
			var err2 error
			if qp, err2 = qemuproc.Start(ctx, qcfg); err2 == nil {
				why := fmt.Sprintf("QEMU could not use KVM here (%s), so it runs under TCG", firstLine(err.Error()))
				vm.qemuNoKVM.Store(&why)
				reason += "; " + why
				v.VMMReason = reason
			}
			err = err2
		}
		if err != nil {
			return vm.failStart(ctx, v, fmt.Errorf("start QEMU: %w", err))
		}
		if qp.Accel != "kvm" {
			bootTimeout = bootTimeoutTCG
		}
		for _, f := range qp.Forwards {
			if f.GuestPort == 22 {
				v.SSHPort = f.HostPort
			}
		}
		m = qemuMachine{qp}
		link = &agentLink{vmm: vmmQEMU, socket: qp.AgentSocket}
		v.AgentSocket, v.APISocket = qp.AgentSocket, qp.QMPSocket
	case vmmFirecracker:
		params = append(params, "banger.transport=vsock")
		bin, _ := firecrackerPath(vm.cfg.FirecrackerBin)
		fcfg := fcproc.Config{
			Name: v.Name, Binary: bin, Dir: dir, Kernel: k.VmlinuxPath, Initrd: k.InitrdPath,
			BootArgs: "console=ttyS0 reboot=k pci=off " + strings.Join(params, " "), VCPUs: v.VCPUs,
			MemoryMiB: int(v.MemoryBytes >> 20),
			Drives:    fcDrives(root, extra),
			VsockCID:  3, Logger: vm.log,
			Net: fcNet(att, v.MAC),
		}
		cred, release, err := vm.users.credential(v.ID)
		if err != nil {
			return vm.failStart(ctx, v, err)
		}
		defer release()
		if cred != nil {
			var why string
			if fcfg.Jail, why, err = fcJail(fcfg, vm.cfg.JailerBin, vm.cfg.StateDir, cred.Uid, cred.Gid); err != nil {
				return vm.failStart(ctx, v, err)
			}
			reason += "; " + why
			v.VMMReason = reason
			vm.log.Info("firecracker confinement", "vm", v.Name, "jailer", fcfg.Jail != nil, "why", why)
		}
		fp, err := fcproc.Start(ctx, fcfg)
		if err != nil {
			return vm.failStart(ctx, v, err)
		}
		m = fcMachine{fp}
		link = &agentLink{vmm: vmmFirecracker, socket: fcproc.VsockPath(dir)}
		v.AgentSocket, v.APISocket = fcproc.VsockPath(dir), fcproc.APISocketPath(dir)
	}
	v.PID, v.PIDStartTime = m.pid(), m.startTime()
	v.UpdatedAt = time.Now().UTC()
	if err := vm.st.PutVM(ctx, v); err != nil {
		_ = m.stop(context.Background(), nil)
		return vm.failStart(ctx, v, fmt.Errorf("record the VMM's pid: %w", err))
	}
	vm.setLive(v.ID, &liveVM{m: m, agent: link})

	p.Phase("waiting for the guest agent")
	waitStart := time.Now()
	if err := vm.waitReady(ctx, link, m, bootTimeout); err != nil {
		vm.dropLive(v.ID)
		_ = m.stop(context.Background(), nil)
		return vm.failStart(ctx, v, fmt.Errorf("%w%s", err, vm.keepConsole(v.ID, consoleLog(kind, dir))))
	}
	v.State, v.StartedAt, v.UpdatedAt = store.VMRunning, time.Now().UTC(), time.Now().UTC()
	if err := vm.st.PutVM(ctx, v); err != nil {
		return store.VM{}, err
	}
	vm.hostsChanged(ctx)
	go vm.watch(v.ID, v.Name, m)
	vm.log.Debug("VM running", "vm", v.Name, "vmm", kind, "agent_wait", time.Since(waitStart).Round(time.Millisecond))
	return v, nil
}

func consoleLog(kind, dir string) string {
	if kind == vmmFirecracker {
		return fcproc.ConsoleLogPath(dir)
	}
	return qemuproc.ConsoleLogPath(dir)
}

// failedConsoleName is where a failed start's console log is kept, in the
// VM's directory, since its run dir is removed.
const failedConsoleName = "console-failed-start.log"

// keepConsole keeps the end of a failed start's console log (at most
// consolelog.DefaultMax bytes) in the VM's directory, and returns what the
// error says of it: where it is and its last lines, sanitized.
func (vm *vmManager) keepConsole(id, path string) string {
	kept := filepath.Join(vm.ws.Dir(id), failedConsoleName)
	if err := copyTail(path, kept, consolelog.DefaultMax); err != nil {
		vm.log.Warn("keep the console log of a failed start", "from", path, "error", err)
		kept = ""
	}
	return tailOf(kept)
}

// copyTail writes the last limit bytes of src to dst, atomically.
func copyTail(src, dst string, limit int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	off := max(fi.Size()-limit, 0)
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.NewSectionReader(in, off, limit))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// tailOf ends an error with where a console log is and its last lines,
// read from a bounded end of the file and stripped of control sequences.
func tailOf(path string) string {
	if path == "" {
		return ""
	}
	lines := consolelog.Tail(path, 15)
	if len(lines) == 0 {
		return "; the console log is " + path + " (empty)"
	}
	return "; the console log is " + path + "\n\nlast lines of the console:\n  " + strings.Join(lines, "\n  ")
}

// failStart records a start that failed and undoes it: the root snapshot,
// the network attachment and the run dir go.
func (vm *vmManager) failStart(ctx context.Context, v store.VM, err error) (store.VM, error) {
	if v.RunDir != "" {
		if rerr := os.RemoveAll(v.RunDir); rerr != nil {
			vm.log.Warn("remove the run dir after a failed start", "vm", v.Name, "error", rerr)
		}
	}
	vm.releaseRoot(context.WithoutCancel(ctx), v)
	if v.Network == netBridge {
		if derr := vm.net.detach(context.WithoutCancel(ctx), v.ID); derr != nil {
			vm.log.Warn("detach network after a failed start", "vm", v.Name, "error", derr)
		}
	}
	v.State, v.LastError, v.PID, v.PIDStartTime = store.VMFailed, err.Error(), 0, 0
	v.UpdatedAt = time.Now().UTC()
	if perr := vm.st.PutVM(context.WithoutCancel(ctx), v); perr != nil {
		vm.log.Error("record failed start", "vm", v.Name, "error", perr)
	}
	return v, fmt.Errorf("start VM %s: %w", v.Name, err)
}

// waitReady polls the agent until it answers and reports ready, the VMM
// exits, or the bound passes.
func (vm *vmManager) waitReady(ctx context.Context, link *agentLink, m machine, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	c := link.client()
	var last error
	for {
		select {
		case <-m.done():
			return errors.New("the VMM exited while the guest was booting")
		default:
		}
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.Health(hctx)
		hcancel()
		if err == nil && h.Ready {
			return nil
		}
		if err == nil {
			err = errors.New("the agent answers but the guest is not ready yet")
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the guest agent was not ready within %s (last: %v)", bound, last)
			}
			return ctx.Err()
		case <-m.done():
			return errors.New("the VMM exited while the guest was booting")
		case <-time.After(readyPoll):
		}
	}
}

// readyPoll is how often the agent is asked whether the guest is ready;
// each asking is one small request on an open connection.
const readyPoll = 50 * time.Millisecond

func (vm *vmManager) recordHostKeys(ctx context.Context, v store.VM, link *agentLink) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	keys, err := guestHostKeys(ctx, link.client())
	if err != nil {
		return err
	}
	return sshkey.WriteKnownHosts(vm.knownHosts(v.ID), []string{v.Name + ".banger"}, keys)
}

// maxHostKeysOutput bounds what bangerd takes of the guest's answer to
// listing its host keys (a few hundred bytes each).
const maxHostKeysOutput = 64 << 10

// guestHostKeys returns the lines of the guest's SSH host public keys.
// The guest is not trusted: it is read up to maxHostKeysOutput bytes.
func guestHostKeys(ctx context.Context, c *client.Client) ([]string, error) {
	out := &cappedBuffer{max: maxHostKeysOutput}
	st, err := c.Exec(ctx, client.ExecRequest{Argv: []string{"/bin/sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null"}}, nil, out, io.Discard)
	if err != nil {
		return nil, err
	}
	if st.Code != 0 && out.b.Len() == 0 {
		return nil, errors.New("the guest has no SSH host keys")
	}
	return strings.Split(out.b.String(), "\n"), nil
}

// cappedBuffer keeps what is written to it, up to max bytes; a write
// beyond fails.
type cappedBuffer struct {
	b   strings.Builder
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > c.max {
		return 0, fmt.Errorf("the guest sent more than %d bytes", c.max)
	}
	return c.b.Write(p)
}

// watch keeps a running VM's logs bounded and records a VM whose VMM exits
// on its own (a poweroff inside the guest, a crash) as stopped. It returns
// when the VMM has exited or the manager shuts down.
func (vm *vmManager) watch(id, name string, m machine) {
	consolelog.Keep(vm.bg, m.done(), m.logs(), consolelog.DefaultMax, consolelog.DefaultInterval, vm.log.With("vm", name))
	select {
	case <-m.done():
	default:
		return // shutting down; the VM runs on and is re-adopted
	}
	unlock := vm.locks.MustLock(id)
	defer unlock()
	cur := vm.getLive(id)
	if cur == nil || cur.m != m {
		return // stopped through the manager, which recorded it
	}
	vm.dropLive(id)
	ctx := context.Background()
	v, err := vm.st.GetVM(ctx, name)
	if err != nil || v.ID != id {
		return
	}
	v.State, v.PID, v.PIDStartTime = store.VMStopped, 0, 0
	v.StoppedAt, v.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	_ = vm.st.PutVM(ctx, v)
	fcproc.CleanupJail(v.RunDir)
	_ = os.RemoveAll(v.RunDir)
	vm.releaseNetwork(ctx, v)
	vm.releaseRoot(ctx, v)
	vm.log.Info("VM stopped on its own", "vm", name)
}

func (vm *vmManager) isLive(id string) bool { return vm.getLive(id) != nil }

func (vm *vmManager) getLive(id string) *liveVM {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.live[id]
}

func (vm *vmManager) setLive(id string, l *liveVM) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.live[id] = l
}

func (vm *vmManager) dropLive(id string) {
	vm.mu.Lock()
	l := vm.live[id]
	delete(vm.live, id)
	vm.mu.Unlock()
	if l != nil && l.agent != nil {
		l.agent.close()
	}
}

// Stop shuts a running VM down: the agent powers the guest off, then the
// VMM's own escalation, each bounded.
func (vm *vmManager) Stop(ctx context.Context, name string) (store.VM, error) {
	v, err := vm.st.GetVM(ctx, name)
	if err != nil {
		return store.VM{}, err
	}
	unlock := vm.locks.MustLock(v.ID)
	defer unlock()
	return vm.stopLocked(ctx, v, false)
}

// stopLocked stops a VM whose lock the caller holds: gracefully (the agent's
// poweroff, then the VMM's escalation), or, with kill, by killing the VMM at
// once, for a VM whose disks are about to be deleted.
func (vm *vmManager) stopLocked(ctx context.Context, v store.VM, kill bool) (store.VM, error) {
	l := vm.getLive(v.ID)
	if l == nil {
		if v.State == store.VMRunning || v.State == store.VMStarting || v.State == store.VMStopping {
			v.State = store.VMStopped
		}
		return v, nil
	}
	v.State, v.UpdatedAt = store.VMStopping, time.Now().UTC()
	_ = vm.st.PutVM(ctx, v)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	graceful := func(c context.Context) error { return l.agent.client().Shutdown(c) }
	if kill {
		// A done context makes the VMM skip its gentle steps and kill.
		cancel()
		graceful = nil
	}
	err := l.m.stop(sctx, graceful)
	vm.dropLive(v.ID)
	_ = os.RemoveAll(v.RunDir)
	vm.releaseNetwork(context.WithoutCancel(ctx), v)
	vm.releaseRoot(context.WithoutCancel(ctx), v)
	v.State, v.PID, v.PIDStartTime = store.VMStopped, 0, 0
	v.StoppedAt, v.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	if err != nil {
		v.LastError = "stop: " + err.Error()
	}
	if perr := vm.st.PutVM(context.WithoutCancel(ctx), v); perr != nil {
		return v, perr
	}
	vm.hostsChanged(ctx)
	return v, err
}

// releaseNetwork gives back a bridged VM's tap, ports and lease.
func (vm *vmManager) releaseNetwork(ctx context.Context, v store.VM) {
	if v.Network != netBridge {
		return
	}
	if err := vm.net.detach(ctx, v.ID); err != nil {
		vm.log.Warn("detach network", "vm", v.Name, "error", err)
	}
}

// hostsChanged rewrites the NAME.banger block; a failure is logged, never
// fatal to the VM.
func (vm *vmManager) hostsChanged(ctx context.Context) {
	if err := vm.net.updateHosts(context.WithoutCancel(ctx)); err != nil {
		vm.log.Warn("update the hosts file", "file", vm.cfg.HostsFile, "error", err)
	}
}

// Remove stops a VM if needed and deletes it with its disks and files.
func (vm *vmManager) Remove(ctx context.Context, name string, force bool) error {
	v, err := vm.st.GetVM(ctx, name)
	if err != nil {
		return err
	}
	unlock := vm.locks.MustLock(v.ID)
	defer unlock()
	began := time.Now()
	var stopped time.Duration
	if vm.isLive(v.ID) {
		if !force {
			return vmInputError{fmt.Errorf("VM %q is running: stop it first, or use rm -f", name)}
		}
		// Its disks are deleted with it, so nothing a clean guest shutdown
		// would flush survives: kill the VMM rather than wait for one.
		if _, err := vm.stopLocked(ctx, v, true); err != nil {
			vm.log.Warn("stop before remove", "vm", name, "error", err)
		}
		stopped = time.Since(began)
	}
	if v.RunDir != "" {
		_ = os.RemoveAll(v.RunDir)
	}
	if err := vm.ws.Remove(v.ID); err != nil {
		return fmt.Errorf("remove the files of VM %q: %w", name, err)
	}
	if err := vm.st.DeleteVM(ctx, name); err != nil {
		return err
	}
	vm.log.Debug("VM removed", "vm", name, "stop", stopped.Round(time.Millisecond), "total", time.Since(began).Round(time.Millisecond))
	return nil
}

// Agent returns a client for a running VM's guest agent.
func (vm *vmManager) Agent(ctx context.Context, name string) (*agentLink, store.VM, error) {
	v, err := vm.st.GetVM(ctx, name)
	if err != nil {
		return nil, store.VM{}, err
	}
	l := vm.getLive(v.ID)
	if l == nil || v.State != store.VMRunning {
		return nil, v, vmInputError{fmt.Errorf("VM %q is %s, not running: start it (banger vm start %s)", name, v.State, name)}
	}
	return l.agent, v, nil
}

// Reconcile makes the store true after a daemon (re)start: VMM processes
// that still run are adopted, dead ones are recorded as stopped with the
// reason, and files no VM owns are removed.
func (vm *vmManager) Reconcile(ctx context.Context) error {
	vms, err := vm.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, v := range vms {
		known[v.ID] = true
		if v.RunDir != "" && filepath.Clean(v.RunDir) != vm.runDir(v.ID) {
			// A row of another install (an adopted or copied store) or of
			// another runtime_dir: its run dir, VMM and network are not
			// this daemon's to kill or delete. Forget them.
			vm.log.Warn("a VM's run dir is not under this daemon's runtime dir: it and any VMM using it are left alone, and the VM is recorded as stopped",
				"vm", v.Name, "run_dir", v.RunDir, "runtime_dir", vm.cfg.RuntimeDir)
			if v.State == store.VMRunning || v.State == store.VMStarting || v.State == store.VMStopping {
				v.State, v.LastError = store.VMStopped, "its run dir "+v.RunDir+" was not under this bangerd's runtime dir; any VMM still using it was left alone"
				v.StoppedAt = time.Now().UTC()
			}
			v.RunDir, v.PID, v.PIDStartTime, v.UpdatedAt = "", 0, 0, time.Now().UTC()
			if err := vm.st.PutVM(ctx, v); err != nil {
				return err
			}
			continue
		}
		if v.State != store.VMRunning && v.State != store.VMStarting && v.State != store.VMStopping {
			if v.RunDir != "" {
				fcproc.CleanupJail(v.RunDir)
				_ = os.RemoveAll(v.RunDir)
			}
			continue
		}
		var m machine
		var link *agentLink
		switch v.VMMKind {
		case vmmQEMU:
			if p, err := qemuproc.Adopt(v.PID, v.PIDStartTime, v.RunDir); err == nil {
				m, link = qemuMachine{p}, &agentLink{vmm: vmmQEMU, socket: v.AgentSocket}
			}
		case vmmFirecracker:
			if p, err := fcproc.Adopt(v.PID, v.PIDStartTime, v.RunDir); err == nil {
				m, link = fcMachine{p}, &agentLink{vmm: vmmFirecracker, socket: v.AgentSocket}
			}
		}
		if m != nil && v.State == store.VMRunning {
			vm.setLive(v.ID, &liveVM{m: m, agent: link})
			go vm.watch(v.ID, v.Name, m)
			vm.log.Info("re-adopted running VM", "vm", v.Name, "pid", v.PID)
			if v.Network == netBridge {
				// Its resolv.conf names the gateway: answer there again at
				// once, before anyone else can take the port.
				vm.net.resumeDNS(ctx)
			}
			continue
		}
		if m != nil {
			// Caught mid-start or mid-stop: kill it at once (a cancelled
			// context skips the graceful steps), since the daemon does not
			// answer the CLI until reconciliation is done.
			kctx, kill := context.WithCancel(ctx)
			kill()
			_ = m.stop(kctx, nil)
		}
		// A daemon killed between spawning the VMM and recording its pid
		// leaves a VMM nobody knows: find it by its run dir.
		if n := killStrays(v.RunDir); n > 0 {
			vm.log.Warn("killed VMM processes left by a previous daemon", "vm", v.Name, "count", n)
		}
		reason := "the VMM process was gone when bangerd started"
		if v.State == store.VMStarting {
			v.State, v.LastError = store.VMFailed, "bangerd stopped while the VM was starting"
		} else {
			v.State, v.LastError = store.VMStopped, reason
		}
		v.PID, v.PIDStartTime, v.UpdatedAt = 0, 0, time.Now().UTC()
		if v.StoppedAt.IsZero() || v.State == store.VMStopped {
			v.StoppedAt = time.Now().UTC()
		}
		if err := vm.st.PutVM(ctx, v); err != nil {
			return err
		}
		if v.RunDir != "" {
			_ = os.RemoveAll(v.RunDir)
		}
		vm.releaseNetwork(ctx, v)
		vm.releaseRoot(ctx, v)
		vm.log.Warn("VM found not running at start", "vm", v.Name, "now", v.State)
	}
	// Leftover snapshots of VMs that do not run (a crash between setup and
	// start, or a daemon killed with VMs stopping).
	vm.removeLeftoverSnapshots(ctx)
	// Leftovers: the trash of removals cut short is deleted, and so is the
	// directory of a create cut short before its row was recorded (still
	// marked uncommitted). Any other VM dir with no row (a VM the store has
	// forgotten: a store restored from an older backup, or adopted) is
	// moved aside, never deleted: the daemon cannot prove it is garbage.
	// Run dirs with no row hold no data and are removed.
	if err := vm.ws.Sweep(); err != nil {
		vm.log.Warn("finding the directories of removed VMs to delete", "error", err)
	}
	ids, err := vm.ws.List()
	if err != nil {
		vm.log.Warn("list VM directories", "error", err)
	}
	for _, id := range ids {
		if known[id] {
			// A create killed between recording its row and Commit.
			if err := vm.ws.Commit(id); err != nil {
				vm.log.Warn("VM directory", "id", id, "error", err)
			}
			continue
		}
		if vm.ws.Uncommitted(id) {
			vm.log.Warn("removing the directory of a VM create cut short before its row was recorded", "id", id)
			if err := vm.ws.Remove(id); err != nil {
				vm.log.Warn("remove the directory of a VM create cut short", "id", id, "error", err)
			}
			continue
		}
		to, err := vm.ws.MoveAside(id, time.Now())
		if err != nil {
			vm.log.Error("a VM directory has no row in the store and could not be moved aside; it was left where it is", "id", id, "error", err)
			continue
		}
		vm.log.Warn("a VM directory has no row in the store: moved aside, not deleted (banger doctor says how to recover or delete it)", "id", id, "to", to)
	}
	runs, _ := os.ReadDir(filepath.Join(vm.cfg.RuntimeDir, "vms"))
	for _, e := range runs {
		if !known[e.Name()] {
			dir := filepath.Join(vm.cfg.RuntimeDir, "vms", e.Name())
			killStrays(dir)
			_ = os.RemoveAll(dir)
		}
	}
	// Chroots of jailed Firecrackers that nothing runs in: a host reboot
	// emptied the run dirs whose links led to them.
	for _, d := range fcproc.SweepJails(filepath.Join(vm.cfg.StateDir, jailBaseName)) {
		vm.log.Info("removed the chroot of a Firecracker no longer running", "dir", d)
	}
	return nil
}

// removeWait bounds how long shutdown waits for removed VMs' directories
// to be deleted; the rest is deleted at the next start.
const removeWait = 30 * time.Second

// Shutdown leaves running VMs running: they are re-adopted at the next
// start. It drops the agent connections and waits for the directories of
// removed VMs to be deleted.
func (vm *vmManager) Shutdown() {
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), removeWait)
		defer cancel()
		if err := vm.ws.Close(ctx); err != nil {
			vm.log.Warn("shutdown", "error", err)
		}
	}()
	defer vm.priv.close()
	defer vm.net.close()
	vm.bgStop()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for _, l := range vm.live {
		if l.agent != nil {
			l.agent.close()
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// fcNet is Firecracker's network interface: the tap when the VM is on the
// bridge, none otherwise.
func fcNet(att netmgr.Attachment, mac string) *fcproc.NetConfig {
	if att.Tap == "" {
		return nil
	}
	return &fcproc.NetConfig{Tap: att.Tap, MAC: mac}
}

func qemuDrives(root string, extra []string) []qemuproc.Drive {
	ds := []qemuproc.Drive{{Path: root}}
	for _, e := range extra {
		ds = append(ds, qemuproc.Drive{Path: e})
	}
	return ds
}

func fcDrives(root string, extra []string) []fcproc.DriveConfig {
	ds := []fcproc.DriveConfig{{ID: "root", Path: root, Root: true}}
	for i, e := range extra {
		ds = append(ds, fcproc.DriveConfig{ID: fmt.Sprintf("disk%d", i+1), Path: e})
	}
	return ds
}

// killStrays SIGKILLs every VMM process of runDir (a QEMU with its -name
// marker, a Firecracker with its API socket there) and waits, bounded, for
// them to go. It returns how many it killed. A process that only names a
// file in runDir (someone's `tail -f .../console.log`) is left alone.
func killStrays(runDir string) int {
	if runDir == "" {
		return 0
	}
	// A jailed Firecracker names no host path: it is found by its chroot.
	jailed := fcproc.CleanupJail(runDir)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmd), "\x00"), "\x00")
		if qemuproc.IsCommandLineOf(args, runDir) || fcproc.IsCommandLineOf(args, runDir) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				pids = append(pids, pid)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && processRunning(pid) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return jailed + len(pids)
}

// processRunning is false for a pid that is gone or a zombie.
func processRunning(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return !(i > 0 && i+2 < len(st) && st[i+2] == 'Z')
}

// removeLeftoverSnapshots removes the snapshots of this bangerd's VMs (their
// changes live in its state dir) that do not run. Only a daemon that can
// reach root has any; without one there is nothing to look at.
func (vm *vmManager) removeLeftoverSnapshots(ctx context.Context) {
	ops, err := vm.priv.get(ctx)
	if err != nil {
		return
	}
	snaps, err := ops.ListSnapshots(ctx)
	if err != nil {
		vm.log.Warn("list root snapshots", "error", err)
		return
	}
	state, err := filepath.EvalSymlinks(vm.cfg.StateDir)
	if err != nil {
		state = vm.cfg.StateDir
	}
	for _, sn := range snaps {
		rel, err := filepath.Rel(state, sn.COWFile)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // another user's, or another state dir's
		}
		id, mine := strings.CutPrefix(sn.Name, snapshotPrefix())
		if !mine {
			continue
		}
		if !vm.isLive(id) {
			vm.log.Warn("removing leftover root snapshot", "name", sn.Name)
			if err := ops.RemoveSnapshot(ctx, sn.Name); err != nil {
				vm.log.Warn("remove leftover root snapshot", "name", sn.Name, "error", err)
			}
		}
	}
}
