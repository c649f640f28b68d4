package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/sshkey"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/workspace"
	"banger/internal/guest/client"
	"banger/internal/store"
)

// createFrom makes a VM from snapshot r.From: its disks are clones of the
// snapshot's frozen ones, its shape (image, kernel, vCPUs, memory, disk,
// VMM) the snapshot's, and its first start resumes the snapshot. The
// caller holds the name's lock and has checked the name is free.
func (vm *vmManager) createFrom(ctx context.Context, r CreateRequest, p imagemgr.Progress) (store.VM, error) {
	sn, err := vm.st.GetSnapshot(ctx, r.From)
	if errors.Is(err, store.ErrNotFound) {
		return store.VM{}, inputf("no snapshot %q (banger snapshot ls lists them)", r.From)
	}
	if err != nil {
		return store.VM{}, err
	}
	if sn.State != store.SnapshotReady {
		return store.VM{}, inputf("snapshot %q is still being saved", sn.Name)
	}
	if err := fromShapeConflicts(r, sn); err != nil {
		return store.VM{}, err
	}
	st, err := readSnapState(sn)
	if err != nil {
		return store.VM{}, err
	}
	nd, err := vm.newVMDir()
	if err != nil {
		return store.VM{}, err
	}
	defer nd.drop()
	id, dir := nd.id, nd.path
	p.Phase("cloning the snapshot's disks")
	disk := filepath.Join(dir, workspace.RootDiskName)
	used, err := workspace.CloneDisk(ctx, filepath.Join(sn.Dir, snapRootDisk), disk, workspace.Auto, workspace.CloneOptions{NoSync: r.StartNow})
	if err != nil {
		return store.VM{}, fmt.Errorf("clone the root disk of snapshot %s: %w", sn.Name, err)
	}
	if st.Drives > 1 {
		if _, err := workspace.CloneDisk(ctx, filepath.Join(sn.Dir, snapWorkDisk), filepath.Join(dir, workspace.WorkDiskName), workspace.Auto, workspace.CloneOptions{NoSync: r.StartNow}); err != nil {
			return store.VM{}, fmt.Errorf("clone the work disk of snapshot %s: %w", sn.Name, err)
		}
	}
	now := time.Now().UTC()
	v := store.VM{ID: id, Name: r.Name, ImageID: sn.ImageID, KernelID: sn.KernelID, VCPUs: sn.VCPUs,
		MemoryBytes: sn.MemoryBytes, DiskBytes: sn.DiskBytes, State: store.VMCreated, VMMRequested: sn.VMMKind,
		COWKind: used, COWDevice: disk, Publish: r.publish, RestoreFrom: sn.ID, CreatedAt: now, UpdatedAt: now}
	if err := vm.st.PutVM(ctx, v); err != nil {
		return store.VM{}, err
	}
	// A snapshot rm that ran while the disks were cloned removed the
	// snapshot before this row said a VM needs it (once the row is in,
	// the store refuses that removal): the clone could never resume.
	if _, err := vm.st.GetSnapshotByID(ctx, sn.ID); err != nil {
		if derr := vm.st.DeleteVM(context.WithoutCancel(ctx), v.Name); derr != nil {
			vm.log.Warn("remove the row of a clone whose snapshot went", "vm", v.Name, "error", derr)
		}
		return store.VM{}, inputf("snapshot %q was removed while %s was made from it: nothing was made", sn.Name, r.Name)
	}
	nd.keep(v.Name)
	return v, nil
}

// fromShapeConflicts refuses a create --from that also asks for a shape of
// its own that differs from the snapshot's: a saved guest resumes only
// with the image, kernel, vCPUs, memory and VMM it was saved with.
func fromShapeConflicts(r CreateRequest, sn store.Snapshot) error {
	switch {
	case r.Image != "":
		return inputf("--from %s: the image is the snapshot's; leave the image out", sn.Name)
	case r.VCPUs != 0 && r.VCPUs != sn.VCPUs:
		return inputf("--from %s: the snapshot has %d vCPUs; leave --cpus out", sn.Name, sn.VCPUs)
	case r.Memory != 0 && r.Memory != sn.MemoryBytes:
		return inputf("--from %s: the snapshot has %s of memory; leave --memory out", sn.Name, config.Size(sn.MemoryBytes))
	case r.Disk != 0 && r.Disk != sn.DiskBytes:
		return inputf("--from %s: the snapshot's disk is %s; leave --disk out", sn.Name, config.Size(sn.DiskBytes))
	case r.VMM != "" && r.VMM != vmmAuto && r.VMM != sn.VMMKind:
		return inputf("--from %s: the snapshot was saved under %s and resumes only there; leave --vmm out", sn.Name, sn.VMMKind)
	}
	return nil
}

// restoreOf is what the start of v resumes: for a VM made from a snapshot
// whose first start this is, the snapshot's saved state; nil otherwise.
func (vm *vmManager) restoreOf(ctx context.Context, v store.VM, want string) (*vmm.Restore, error) {
	if v.RestoreFrom == "" {
		return nil, nil
	}
	sn, err := vm.st.GetSnapshotByID(ctx, v.RestoreFrom)
	if err != nil {
		return nil, fmt.Errorf("the snapshot VM %s was made from: %w", v.Name, err)
	}
	if want != sn.VMMKind && want != vmmAuto {
		return nil, inputf("VM %q resumes snapshot %s, saved under %s: its first start runs there (leave --vmm out)", v.Name, sn.Name, sn.VMMKind)
	}
	if sn.KernelID != v.KernelID || sn.ImageID != v.ImageID {
		return nil, fmt.Errorf("VM %q and its snapshot %s name another kernel or image", v.Name, sn.Name)
	}
	st, err := readSnapState(sn)
	if err != nil {
		return nil, err
	}
	if v.State != store.VMCreated {
		// An earlier first start got further than nothing (it failed, was
		// cancelled, or its daemon died): its guest may have run on the
		// clone's disks, which then no longer match the saved memory.
		// Resuming over them would corrupt the guest's filesystems.
		if err := vm.recloneDisks(ctx, v, sn, st); err != nil {
			return nil, err
		}
	}
	return &vmm.Restore{Dir: sn.Dir, State: st}, nil
}

// recloneDisks puts fresh clones of the snapshot's frozen disks in place
// of v's, each made beside the disk and renamed over it.
func (vm *vmManager) recloneDisks(ctx context.Context, v store.VM, sn store.Snapshot, st vmm.State) error {
	disks := [][2]string{{snapRootDisk, v.COWDevice}}
	if st.Drives > 1 {
		disks = append(disks, [2]string{snapWorkDisk, vm.ws.Path(v.ID, workspace.WorkDiskName)})
	}
	for _, d := range disks {
		tmp := d[1] + ".restore"
		_ = os.Remove(tmp)
		if _, err := workspace.CloneDisk(ctx, filepath.Join(sn.Dir, d[0]), tmp, workspace.Auto, workspace.CloneOptions{NoSync: true}); err != nil {
			return fmt.Errorf("clone the disks of snapshot %s again for VM %s, whose last start did not finish: %w", sn.Name, v.Name, err)
		}
		if err := os.Rename(tmp, d[1]); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("clone the disks of snapshot %s again for VM %s: %w", sn.Name, v.Name, err)
		}
	}
	return nil
}

// reidentify gives a guest resumed from a snapshot an identity of its own
// through its agent (host name, network, clock, kernel randomness, SSH
// host keys), records its new host keys, and marks the VM's first start
// done. A guest that cannot take it fails the start: two VMs with one
// identity is worse than one VM that did not start.
func (vm *vmManager) reidentify(ctx context.Context, r *startRun) error {
	r.p.Phase("giving the clone its own identity")
	req := client.ResumedRequest{ID: r.v.ID, Hostname: r.v.Name}
	if r.att.Tap != "" {
		req.Network = &client.ResumedNetwork{MAC: r.att.MAC.String(), Address: r.att.IP, Gateway: r.att.Gateway, DNS: r.att.DNS}
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := vmm.Client(r.m.Agent()).Resumed(rctx, req)
	if len(res.HostKeys) > 0 {
		if kerr := sshkey.WriteKnownHosts(vm.knownHosts(r.v.ID), []string{r.v.Name + ".banger"}, res.HostKeys); kerr != nil && err == nil {
			err = kerr
		}
	}
	if err != nil {
		return fmt.Errorf("give the clone %s its own identity: %w", r.v.Name, err)
	}
	r.v.RestoreFrom = ""
	return nil
}
