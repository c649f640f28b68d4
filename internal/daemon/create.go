package daemon

import (
	"banger/internal/hostprobe"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/workspace"
	"banger/internal/store"
)

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
	// From names a snapshot: the VM is made from its frozen disks and its
	// first start resumes the saved guest instead of booting. Image, VCPUs,
	// Memory, Disk and VMM come from the snapshot (a differing value is
	// refused).
	From    string
	publish []store.PortMap // checked by validate
	// warm marks the warm pool's helper VM (warmpool.go): it may take a
	// name under warmHelperPrefix, and its root disk is never a dm
	// snapshot, which snapshots cannot freeze.
	warm bool
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
	if strings.HasPrefix(r.Name, warmHelperPrefix) && !r.warm {
		return inputf("VM names starting with %q are kept for the warm pool's helper: pick another name", warmHelperPrefix)
	}
	if r.From != "" {
		// The shape comes from the snapshot, checked by createFrom.
		pub, err := checkPublish(r.Publish)
		r.publish = pub
		return err
	}
	if r.Image == "" {
		r.Image = vm.cfg.DefaultImageName
	}
	if r.VCPUs == 0 {
		r.VCPUs = vm.cfg.DefaultVCPUs
	}
	if r.VCPUs < config.MinVCPUs || r.VCPUs > config.MaxVCPUs {
		return inputf("--cpus %d is outside %d to %d", r.VCPUs, config.MinVCPUs, config.MaxVCPUs)
	}
	if r.Memory == 0 {
		r.Memory = int64(vm.cfg.DefaultMemory)
	}
	if r.Memory < config.MinMemory {
		return inputf("--memory %s is below %s", config.Size(r.Memory), config.Size(config.MinMemory))
	}
	if r.Disk == 0 {
		r.Disk = int64(vm.cfg.DefaultDiskSize)
	}
	if r.Disk < 0 {
		return inputf("--disk %d is negative", r.Disk)
	}
	if r.VMM == "" {
		r.VMM = vm.cfg.VMM
	}
	if r.VMM != vmmAuto && !vm.drivers.Has(r.VMM) {
		return inputf("unknown vmm %q: use %s or %s", r.VMM, vmmAuto, strings.Join(vm.drivers.Names(), " or "))
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
	if r.From != "" {
		return vm.createFrom(ctx, r, p)
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
	nd, err := vm.newVMDir()
	if err != nil {
		return store.VM{}, err
	}
	defer nd.drop()
	id, dir := nd.id, nd.path
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
		if _, err := workspace.CloneDisk(ctx, im.WorkSeedPath, filepath.Join(dir, workspace.WorkDiskName), fileCOW, workspace.CloneOptions{NoSync: r.StartNow}); err != nil {
			return store.VM{}, fmt.Errorf("seed the work disk of %s: %w", r.Name, err)
		}
	}
	now := time.Now().UTC()
	v := store.VM{ID: id, Name: r.Name, ImageID: im.ID, KernelID: k.ID, VCPUs: r.VCPUs, MemoryBytes: r.Memory,
		DiskBytes: r.Disk, State: store.VMCreated, VMMRequested: r.VMM, COWKind: used, COWDevice: disk,
		Publish: r.publish, CreatedAt: now, UpdatedAt: now}
	if err := vm.st.PutVM(ctx, v); err != nil {
		return store.VM{}, err
	}
	nd.keep(v.Name)
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

// makeRootDisk gives the VM its writable root: a device-mapper snapshot
// over the image (its copy-on-write store is made at start), or a reflink
// clone or sparse copy grown to the requested size. auto takes dmsnap when
// this host has device-mapper, as the fastest on ext4.
func (vm *vmManager) makeRootDisk(ctx context.Context, r CreateRequest, im store.Image, dir string, p imagemgr.Progress) (path, used string, err error) {
	// The rule is hostprobe's, the one doctor shows. Only dmsnap needs
	// asking (through the helper for a user's bangerd); reflink is tried by
	// the clone itself, which falls back to a copy under auto.
	var facts hostprobe.Facts
	if !r.warm && (r.COW == workspace.DMSnap || r.COW == workspace.Auto || r.COW == "") {
		facts.Snapshots = hostprobe.SnapshotsFrom(vm.snapshotsAvailable(ctx))
	}
	kind, _, err := hostprobe.ChooseCOW(r.COW, facts)
	if err != nil {
		return "", "", inputf("%v", err)
	}
	if kind == hostprobe.COWDMSnap {
		if r.Disk > im.SizeBytes && im.SizeBytes > 0 {
			p.Phase(fmt.Sprintf("dmsnap: the root disk keeps the image's size (%s); --disk sets the room for changes", config.Size(im.SizeBytes)))
		}
		return filepath.Join(dir, workspace.RootCOWName), workspace.DMSnap, nil
	}
	disk := filepath.Join(dir, workspace.RootDiskName)
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

// vmDir is a new VM's directory while the VM is made: drop (deferred)
// removes it unless keep, once the VM's row is in the store, committed it.
type vmDir struct {
	vm       *vmManager
	id, path string
	kept     bool
}

// newVMDir makes a new VM id and its directory.
func (vm *vmManager) newVMDir() (*vmDir, error) {
	id := newVMID()
	dir, err := vm.ws.Create(id)
	if err != nil {
		return nil, err
	}
	return &vmDir{vm: vm, id: id, path: dir}, nil
}

func (d *vmDir) drop() {
	if !d.kept {
		_ = d.vm.ws.Remove(d.id)
	}
}

// keep commits the directory of the VM name, which is recorded.
func (d *vmDir) keep(name string) {
	d.kept = true
	if err := d.vm.ws.Commit(d.id); err != nil {
		d.vm.log.Warn("VM created", "vm", name, "error", err)
	}
}
