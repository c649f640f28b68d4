package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/workspace"
	"banger/internal/guest/client"
	"banger/internal/store"
)

// The warm pool keeps cfg.Warm ready snapshots (store Warm) of the default
// image in the default shape, each saved with its guest booted to agent
// ready and sshd up, so that `vm run` resumes a clone instead of booting.
//
// A warm snapshot is named warmSnapPrefix + the key of the shape it was
// made for (image, kernel, VMM and its version, vCPUs, memory, disk,
// network mode) + "-" + its slot: one whose name does not carry the key of
// today's shape, or whose agent is not this bangerd's version, is stale,
// removed and made again. It is made by a helper VM whose name starts with
// warmHelperPrefix, which users cannot take and `vm ls` does not list.
const (
	warmSnapPrefix   = "warm-"
	warmHelperPrefix = "banger-warm-"
	// warmReadyTimeout bounds the wait for the helper's sshd.
	warmReadyTimeout = 3 * time.Minute
	// warmRemoveTimeout bounds the removal of the helper VM.
	warmRemoveTimeout = 30 * time.Second
	// warmRetry is how long the pool waits, after a build of a shape
	// failed, before it boots another helper VM for that shape.
	warmRetry = 10 * time.Minute
)

// errWarmMismatch is a build whose saved guest cannot serve today's shape:
// its agent is another version than this bangerd (an image made by another
// banger). Booting another helper of the same image would give the same.
var errWarmMismatch = errors.New("the saved guest does not match the default shape")

// warmPool builds warm snapshots one at a time in a goroutine the manager
// owns: it runs under vm.bg, so Shutdown cancels it, and Shutdown waits
// for it (wait) before it tears the rest down.
type warmPool struct {
	vm *vmManager

	mu       sync.Mutex
	building bool
	closed   bool // set by wait: no build starts after it
	wg       sync.WaitGroup

	// sshdUp says whether the helper's sshd is up (so that a clone's
	// resumed request finds host keys to replace); tests replace it.
	sshdUp func(ctx context.Context, l vmm.AgentLink) (bool, error)
	// poll is how often sshdUp is asked.
	poll time.Duration

	// held is the shape whose last build failed, heldWhy why and heldAt
	// when. No helper VM is booted for that shape again until warmRetry
	// has passed, or at all when the guest did not match or its VMM cannot
	// save it (heldForGood):
	// a new image or kernel, another shape or a new bangerd is another
	// shape. Without it every cold `vm run` after a failed build would boot
	// a helper in the background, in vain, beside the user's VM.
	held        warmShape
	heldWhy     string
	heldAt      time.Time
	heldForGood bool
	// now is the pool's clock; tests move it.
	now func() time.Time
}

// heldBack says why no build of shape s is tried now, or "".
func (w *warmPool) heldBack(s warmShape) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.heldWhy == "" || w.held != s {
		return ""
	}
	if w.heldForGood {
		return w.heldWhy
	}
	if left := w.heldAt.Add(warmRetry).Sub(w.clock()); left > 0 {
		// Rounded up: the last half minute is not "in 0s".
		return fmt.Sprintf("%s (tried again in %s)", w.heldWhy, (left + time.Minute - 1).Truncate(time.Minute))
	}
	return ""
}

// hold records that a build of shape s failed with err.
func (w *warmPool) hold(s warmShape, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// A guest that did not match, or a VM its VMM cannot save (a jailed
	// Firecracker), would fail the same way every time.
	forGood := errors.Is(err, errWarmMismatch) || errors.Is(err, vmm.ErrNoSnapshots)
	// One line: it ends up in a VM's VMM reason (errors.Join gives two).
	why := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	w.held, w.heldWhy, w.heldAt, w.heldForGood = s, "the last warm snapshot build failed: "+why, w.clock(), forGood
}

func (w *warmPool) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

func newWarmPool(vm *vmManager) *warmPool {
	return &warmPool{vm: vm, sshdUp: guestSSHDUp, poll: 250 * time.Millisecond}
}

// guestSSHDUp asks the guest agent whether sshd has written its pid file
// (it does once its host keys are loaded); an image without sshd counts
// as up.
func guestSSHDUp(ctx context.Context, l vmm.AgentLink) (bool, error) {
	ex, err := vmm.Client(l).Exec(ctx, client.ExecRequest{Argv: []string{"/bin/sh", "-c", "test -e /run/sshd.pid || ! test -x /usr/sbin/sshd"}}, nil, io.Discard, io.Discard)
	if err != nil {
		return false, err
	}
	return ex.Code == 0 && ex.Signal == "", nil
}

// warmShape is what a warm snapshot must have been made with to serve a
// `vm run` now.
type warmShape struct {
	imageID, kernelID, vmm, vmmVersion, network string
	vcpus                                       int
	memory, disk                                int64
	rootfs                                      string // the image file's device, inode, size and mtime
}

// key names the shape: the part of a warm snapshot's name after the prefix.
func (s warmShape) key() string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s\x00%d\x00%d\x00%d\x00%s",
		s.imageID, s.kernelID, s.vmm, s.vmmVersion, s.network, s.vcpus, s.memory, s.disk, s.rootfs))
	return warmSnapPrefix + hex.EncodeToString(h[:6]) + "-"
}

// shape resolves today's default shape: the default image as it is in the
// store (the pool never pulls), its kernel, the VMM that auto or the
// config picks now and its version, the network mode.
func (w *warmPool) shape(ctx context.Context) (warmShape, error) {
	vm := w.vm
	im, err := vm.images.Image(ctx, vm.cfg.DefaultImageName)
	if err != nil {
		return warmShape{}, fmt.Errorf("default image %s: %w", vm.cfg.DefaultImageName, err)
	}
	k, err := vm.images.Kernel(ctx, im.KernelRef)
	if err != nil {
		return warmShape{}, fmt.Errorf("kernel %s of image %s: %w", im.KernelRef, im.Name, err)
	}
	drv, _, err := chooseVMM(vm.cfg.VMM, vm.host(), vm.drivers)
	if err != nil {
		return warmShape{}, err
	}
	if sc, ok := drv.(vmm.SaveChecker); ok {
		if err := sc.CanSave(); err != nil {
			return warmShape{}, fmt.Errorf("%s: %w", drv.Name(), err)
		}
	}
	// A registered image keeps its id when its file is rebuilt in place:
	// the file's identity is part of the shape, so that a warm snapshot
	// of the old content goes stale.
	fi, err := os.Stat(im.RootfsPath)
	if err != nil {
		return warmShape{}, fmt.Errorf("root filesystem of image %s: %w", im.Name, err)
	}
	rootfs := fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		rootfs = fmt.Sprintf("%d:%d:%s", st.Dev, st.Ino, rootfs)
	}
	s := warmShape{imageID: im.ID, kernelID: k.ID, vmm: drv.Name(), vcpus: vm.cfg.DefaultVCPUs,
		memory: int64(vm.cfg.DefaultMemory), disk: int64(vm.cfg.DefaultDiskSize), rootfs: rootfs}
	ver, ok := drv.(vmm.Versioner)
	if !ok {
		return warmShape{}, fmt.Errorf("%s cannot save a running guest", drv.Name())
	}
	if s.vmmVersion, err = ver.VMMVersion(ctx); err != nil {
		return warmShape{}, fmt.Errorf("version of %s: %w", drv.Name(), err)
	}
	if s.network, err = vm.net.mode(ctx); err != nil {
		return warmShape{}, err
	}
	return s, nil
}

// fresh says whether sn is a ready warm snapshot of shape s.
func (s warmShape) fresh(sn store.Snapshot) bool {
	return sn.Warm && sn.State == store.SnapshotReady && strings.HasPrefix(sn.Name, s.key()) &&
		sn.AgentVersion == buildinfo.Version && sn.ImageID == s.imageID && sn.KernelID == s.kernelID &&
		sn.VMMKind == s.vmm && sn.VMMVersion == s.vmmVersion && sn.VCPUs == s.vcpus &&
		sn.MemoryBytes == s.memory && sn.DiskBytes == s.disk
}

// warmSnapshots lists the warm snapshots, by name.
func (w *warmPool) warmSnapshots(ctx context.Context) ([]store.Snapshot, error) {
	all, err := w.vm.st.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []store.Snapshot
	for _, sn := range all {
		if sn.Warm {
			out = append(out, sn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// defaultShaped says whether a create request asks for nothing the warm
// pool's shape does not give: no image but the default, no vCPUs, memory,
// disk or VMM but the configured ones. It answers before validate fills
// the defaults in; why is "" when it matches.
func (vm *vmManager) defaultShaped(r CreateRequest) (why string) {
	cfg := vm.cfg
	switch {
	case r.Image != "" && r.Image != cfg.DefaultImageName:
		return "image " + r.Image + " is not the default image"
	case r.VCPUs != 0 && r.VCPUs != cfg.DefaultVCPUs,
		r.Memory != 0 && r.Memory != int64(cfg.DefaultMemory),
		r.Disk != 0 && r.Disk != int64(cfg.DefaultDiskSize):
		return "shape differs from the default (--cpus, --memory or --disk)"
	case r.VMM != "" && r.VMM != cfg.VMM:
		return "--vmm " + r.VMM + " differs from the configured vmm " + cfg.VMM
	case r.COW != "" && r.COW != cfg.COW:
		return "--cow differs from the configured cow"
	}
	return ""
}

// Pick chooses what a `vm run` of r resumes: the name of a ready warm
// snapshot of today's shape, or "" with why the run boots cold. The caller
// kicks a build once its cold start succeeded, not before: two boots at
// once would slow the user's own.
func (w *warmPool) Pick(ctx context.Context, r CreateRequest) (from, why string) {
	vm := w.vm
	if vm.cfg.Warm == 0 {
		return "", "the warm pool is off (warm = 0)"
	}
	if r.From != "" {
		return "", ""
	}
	if why := vm.defaultShaped(r); why != "" {
		return "", why
	}
	s, err := w.shape(ctx)
	if err != nil {
		return "", "no warm snapshot: " + err.Error()
	}
	sns, err := w.warmSnapshots(ctx)
	if err != nil {
		return "", "no warm snapshot: " + err.Error()
	}
	stale := false
	for _, sn := range sns {
		if s.fresh(sn) {
			return sn.Name, ""
		}
		stale = stale || sn.State == store.SnapshotReady
	}
	if stale {
		return "", "the warm snapshot is stale (image, kernel, VMM, agent, shape or network changed): being remade"
	}
	if w.isBuilding() {
		return "", "no warm snapshot yet: being made"
	}
	if held := w.heldBack(s); held != "" {
		return "", "no warm snapshot: " + held
	}
	return "", "no warm snapshot yet: made after this cold start"
}

func (w *warmPool) isBuilding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.building
}

// Kick starts a build in the background unless one runs, the pool is
// off, or the manager is shutting down. The build removes stale warm
// snapshots and makes the missing ones.
func (w *warmPool) Kick() {
	if w.vm.cfg.Warm == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.building || w.closed || w.vm.bg.Err() != nil {
		return
	}
	w.building = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() {
			w.mu.Lock()
			w.building = false
			w.mu.Unlock()
		}()
		if err := w.refill(w.vm.bg); errors.Is(err, vmm.ErrNoSnapshots) {
			w.vm.log.Debug("warm pool", "reason", err)
		} else if err != nil {
			w.vm.log.Warn("warm pool", "error", err)
		}
	}()
}

// wait waits for a build to end; Shutdown calls it after cancelling vm.bg.
// A Kick that raced it either started its build before (waited for here)
// or sees closed and starts none.
func (w *warmPool) wait() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wg.Wait()
}

// refill removes stale warm snapshots and makes what is missing of
// cfg.Warm fresh ones, one at a time.
func (w *warmPool) refill(ctx context.Context) error {
	s, err := w.shape(ctx)
	if err != nil {
		return err
	}
	sns, err := w.warmSnapshots(ctx)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, sn := range sns {
		if s.fresh(sn) && len(have) < w.vm.cfg.Warm {
			have[sn.Name] = true
			continue
		}
		if sn.State != store.SnapshotReady {
			continue // being saved, or left by a crash: the next start removes it
		}
		w.vm.log.Info("warm pool: removing a stale warm snapshot", "snapshot", sn.Name)
		if err := w.vm.RemoveSnapshot(ctx, sn.Name); err != nil {
			w.vm.log.Warn("warm pool: remove a stale warm snapshot", "snapshot", sn.Name, "error", err)
		}
	}
	if len(have) < w.vm.cfg.Warm {
		if held := w.heldBack(s); held != "" {
			w.vm.log.Debug("warm pool: no build", "reason", held)
			return nil
		}
	}
	for slot := 1; len(have) < w.vm.cfg.Warm; slot++ {
		name := fmt.Sprintf("%s%d", s.key(), slot)
		if have[name] {
			continue
		}
		if err := w.build(ctx, s, name); err != nil {
			if ctx.Err() == nil {
				w.hold(s, err)
			}
			return fmt.Errorf("make warm snapshot %s: %w", name, err)
		}
		have[name] = true
	}
	return nil
}

// build makes one warm snapshot: a helper VM of the default shape,
// started, waited for until sshd is up, saved, then removed whatever
// happened.
func (w *warmPool) build(ctx context.Context, s warmShape, name string) (err error) {
	vm := w.vm
	began := time.Now()
	helper := warmHelperPrefix + newVMID()[:8]
	v, err := vm.Create(ctx, CreateRequest{Name: helper, Image: vm.cfg.DefaultImageName, VCPUs: s.vcpus, Memory: s.memory,
		Disk: s.disk, VMM: s.vmm, COW: workspace.Auto, StartNow: true, warm: true}, warmProgress{})
	if err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), warmRemoveTimeout)
		defer cancel()
		if rerr := vm.Remove(rctx, helper, true); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the warm pool's helper VM %s: %w", helper, rerr))
		}
	}()
	if v.ImageID != s.imageID || v.KernelID != s.kernelID {
		return fmt.Errorf("the default image changed while its warm snapshot was made")
	}
	if _, err := vm.Start(ctx, helper, "", warmProgress{}); err != nil {
		return err
	}
	if err := w.waitSSHD(ctx, helper); err != nil {
		return err
	}
	sn, err := vm.Snapshot(ctx, SnapshotRequest{VM: helper, Name: name, Warm: true}, warmProgress{})
	if err != nil {
		return err
	}
	if !s.fresh(sn) {
		// Made, yet not of today's shape (its agent is another version than
		// this bangerd, or auto chose another VMM): it would never serve.
		rerr := vm.RemoveSnapshot(context.WithoutCancel(ctx), sn.Name)
		return errors.Join(fmt.Errorf("%w (agent %s, bangerd %s; vmm %s %s, want %s %s): remake the image so that its agent is this banger's (banger image rm %s, then banger image pull or image build)",
			errWarmMismatch, sn.AgentVersion, buildinfo.Version, sn.VMMKind, sn.VMMVersion, s.vmm, s.vmmVersion, vm.cfg.DefaultImageName), rerr)
	}
	vm.log.Info("warm pool: warm snapshot made", "snapshot", name, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

// waitSSHD waits until the helper's sshd is up, asking its agent.
func (w *warmPool) waitSSHD(ctx context.Context, helper string) error {
	ctx, cancel := context.WithTimeout(ctx, warmReadyTimeout)
	defer cancel()
	for {
		l, _, err := w.vm.Agent(ctx, helper)
		if err != nil {
			return err
		}
		up, err := w.sshdUp(ctx, l)
		if err == nil && up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd of the warm pool's helper VM %s is not up after %s (last error: %v): %w", helper, warmReadyTimeout, err, ctx.Err())
		case <-time.After(w.poll):
		}
	}
}

// Start runs at daemon start: it removes helper VMs a killed bangerd left,
// and refreshes warm snapshots made stale by an upgrade or a new config
// (it does not make the first one: that waits for a first cold start). With
// warm = 0 it removes the warm snapshots no VM needs.
func (w *warmPool) Start(ctx context.Context) {
	vm := w.vm
	vms, err := vm.st.ListVMs(ctx)
	if err == nil {
		for _, v := range vms {
			if strings.HasPrefix(v.Name, warmHelperPrefix) {
				if err := vm.Remove(ctx, v.Name, true); err != nil {
					vm.log.Warn("warm pool: remove a helper VM left by the last bangerd", "vm", v.Name, "error", err)
				}
			}
		}
	}
	sns, err := w.warmSnapshots(ctx)
	if err != nil || len(sns) == 0 {
		return
	}
	if vm.cfg.Warm == 0 {
		for _, sn := range sns {
			if err := vm.RemoveSnapshot(ctx, sn.Name); err != nil {
				vm.log.Info("warm pool is off: a warm snapshot stays", "snapshot", sn.Name, "reason", err)
			}
		}
		return
	}
	w.Kick()
}

// Run makes and starts a VM (`vm run`; r is validated). In the default
// shape it resumes a warm snapshot when a fresh one is ready; when that
// resume fails (the snapshot went, the VMM refused it) the VM is removed
// and made again to boot cold, so that the warm pool never fails a run
// that a cold boot would have served. The VM's VMM reason says which.
func (vm *vmManager) Run(ctx context.Context, r CreateRequest, p imagemgr.Progress) (store.VM, error) {
	cold := r
	wr := vm.preferWarm(ctx, &r)
	v, made, err := vm.createAndStart(ctx, r, p)
	if err != nil && wr.from != "" && ctx.Err() == nil {
		vm.log.Warn("warm pool: resume failed, booting cold", "vm", r.Name, "snapshot", wr.from, "error", err)
		if made {
			if rerr := vm.Remove(ctx, r.Name, true); rerr != nil {
				return store.VM{}, errors.Join(err, rerr)
			}
		}
		wr = warmRun{why: fmt.Sprintf("warm snapshot %s could not be resumed (%v)", wr.from, err)}
		v, _, err = vm.createAndStart(ctx, cold, p)
	}
	if err != nil {
		return v, err
	}
	vm.afterWarmRun(ctx, r.Name, wr)
	return vm.st.GetVM(ctx, r.Name)
}

// createAndStart makes and starts r; made says the VM was made.
func (vm *vmManager) createAndStart(ctx context.Context, r CreateRequest, p imagemgr.Progress) (store.VM, bool, error) {
	if _, err := vm.Create(ctx, r, p); err != nil {
		return store.VM{}, false, err
	}
	v, err := vm.Start(ctx, r.Name, "", p)
	return v, true, err
}

// warmRun is what the warm pool did for one `vm run`.
type warmRun struct {
	from, why string // the warm snapshot resumed, or why none was
	kick      bool   // a cold start of the default shape: build after it
}

// preferWarm makes a `vm run` request r, as the user sent it (before
// validate fills the defaults in), resume a warm snapshot when one fits.
func (vm *vmManager) preferWarm(ctx context.Context, r *CreateRequest) warmRun {
	if r.From != "" {
		return warmRun{}
	}
	wr := warmRun{kick: vm.cfg.Warm > 0 && vm.defaultShaped(*r) == ""}
	wr.from, wr.why = vm.warm.Pick(ctx, *r)
	if wr.from != "" {
		r.From, r.Image, r.VCPUs, r.Memory, r.Disk, r.VMM, r.COW = wr.from, "", 0, 0, 0, "", ""
		wr.kick = false
	}
	return wr
}

// afterWarmRun runs once the VM of a `vm run` started: it notes in the
// VM's VMM reason what the warm pool did, and after a cold start of the
// default shape starts the build the next run resumes.
func (vm *vmManager) afterWarmRun(ctx context.Context, name string, wr warmRun) {
	if wr.from != "" || wr.why != "" {
		vm.warmNote(ctx, name, wr.from, wr.why)
	}
	if wr.kick {
		vm.warm.Kick()
	}
}

// warmNote prefixes the VMM reason of a `vm run`'s VM with what the warm
// pool did for it: the snapshot it resumed, or why it booted cold.
func (vm *vmManager) warmNote(ctx context.Context, name, from, why string) {
	note := "resumed from warm snapshot " + from
	if from == "" {
		note = "booted cold: " + why
	}
	v, unlock, err := vm.lockVM(ctx, name)
	if err != nil {
		return
	}
	defer unlock()
	v.VMMReason = note + "; " + v.VMMReason
	if err := vm.st.PutVM(ctx, v); err != nil {
		vm.log.Warn("record the warm pool's note", "vm", name, "error", err)
	}
}

// warmProgress discards the phases of a warm build: nobody watches it.
type warmProgress struct{}

func (warmProgress) Phase(string)               {}
func (warmProgress) SetTotal(int64, store.Unit) {}
func (warmProgress) Add(int64)                  {}
