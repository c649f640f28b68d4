package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/daemon/vmm/vmmtest"
	"banger/internal/store"
)

// snapped is a fake VM that runs, with a ready snapshot s1 of it.
func snapped(t *testing.T) (*vmManager, *vmmtest.Driver, store.VM, store.Snapshot, *resumer) {
	t.Helper()
	vm, d, v := fakeVM(t)
	res := &resumer{}
	d.Resume = res.resume
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	sn, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	return vm, d, v, sn, res
}

// TestReconcileResumesAVMASnapshotLeftPaused: a bangerd killed while it
// saved a VM leaves the VM paused and the snapshot's row saving. The next
// bangerd removes the half-saved snapshot and runs the guest again.
func TestReconcileResumesAVMASnapshotLeftPaused(t *testing.T) {
	vm, d, v := fakeVM(t)
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	m := d.Running()[0]
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	sn := store.Snapshot{ID: newVMID(), Name: "half", VMID: v.ID, VMName: v.Name, ImageID: v.ImageID, KernelID: v.KernelID,
		VMMKind: vmmtest.Name, VCPUs: v.VCPUs, MemoryBytes: v.MemoryBytes, DiskBytes: v.DiskBytes,
		State: store.SnapshotSaving, CreatedAt: time.Now().UTC()}
	sn.Dir = mkdir(t, vm.snapshotDir(sn.ID))
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	vm.Shutdown()
	vm2 := newVMManager(vm.cfg, vm.st, vm.images, vm.log)
	vm2.drivers, vm2.host = vm.drivers, vm.host
	defer vm2.Shutdown()
	if err := vm2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Paused() {
		t.Error("the adopted VM a killed save left paused is still paused")
	}
	if _, err := vm2.st.GetSnapshot(ctx, "half"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the half-saved snapshot's row: %v", err)
	}
	if _, err := os.Stat(sn.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the half-saved snapshot's files: %v", err)
	}
}

// TestRemoveSnapshotWhileSavingIsRefused: removing the files a save is
// writing would let the save record a ready snapshot with no files.
func TestRemoveSnapshotWhileSavingIsRefused(t *testing.T) {
	vm, _, v := fakeVM(t)
	ctx := context.Background()
	sn := store.Snapshot{ID: newVMID(), Name: "busy", VMID: v.ID, VMName: v.Name, ImageID: v.ImageID, KernelID: v.KernelID,
		VMMKind: vmmtest.Name, VCPUs: v.VCPUs, MemoryBytes: v.MemoryBytes, DiskBytes: v.DiskBytes,
		State: store.SnapshotSaving, CreatedAt: time.Now().UTC()}
	sn.Dir = mkdir(t, vm.snapshotDir(sn.ID))
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveSnapshot(ctx, "busy"); err == nil || !strings.Contains(err.Error(), "still being saved") {
		t.Fatalf("rm of a snapshot being saved = %v", err)
	}
	if _, err := os.Stat(sn.Dir); err != nil {
		t.Fatalf("the files of a snapshot being saved were touched: %v", err)
	}
}

// TestSnapshotRmLeavesADirectoryNotItsOwn: a record naming a directory
// outside the state dir's snapshots (a copied or edited store) loses its
// row, not that directory.
func TestSnapshotRmLeavesADirectoryNotItsOwn(t *testing.T) {
	vm, _, _, sn, _ := snapped(t)
	ctx := context.Background()
	other := t.TempDir()
	keep := filepath.Join(other, "precious")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	sn.Dir = other
	if err := vm.st.PutSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveSnapshot(ctx, sn.Name); err == nil || !strings.Contains(err.Error(), "left alone") {
		t.Fatalf("rm of a snapshot whose dir is elsewhere = %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("rm deleted a directory that was not the snapshot's: %v", err)
	}
}

// tamper rewrites the snapshot's state.json through edit.
func tamper(t *testing.T, sn store.Snapshot, edit func(*vmm.State)) {
	t.Helper()
	st, err := readSnapState(sn)
	if err != nil {
		t.Fatal(err)
	}
	edit(&st)
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(sn.Dir, snapStateFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTamperedSnapshotsAreRefused: a state.json edited to claim another
// shape, VMM or files, one too big to read, a disk replaced by a link to
// a host file, and a VMM upgraded since the save: no clone is made or
// resumed from any of them, and nothing of the attempt is left.
func TestTamperedSnapshotsAreRefused(t *testing.T) {
	vm, _, _, sn, _ := snapped(t)
	ctx := context.Background()
	orig, err := os.ReadFile(filepath.Join(sn.Dir, snapStateFile))
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:$6$secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		do         func()
	}{
		{"memory", "MiB of memory", func() { tamper(t, sn, func(s *vmm.State) { s.MemoryMiB = 4096 }) }},
		{"vmm", "says vmm", func() { tamper(t, sn, func(s *vmm.State) { s.VMM = "qemu" }) }},
		{"version", "vmm version", func() { tamper(t, sn, func(s *vmm.State) { s.VMMVersion = "9.9" }) }},
		{"file", "not a plain file name", func() { tamper(t, sn, func(s *vmm.State) { s.Files = []string{"../../../etc/shadow"} }) }},
		{"unlisted", "does not list", func() { tamper(t, sn, func(s *vmm.State) { s.Files = append(s.Files, "other") }) }},
		{"huge", "over", func() {
			big := append([]byte(`{"vmm":"`), bytes.Repeat([]byte("a"), 2<<20)...)
			if err := os.WriteFile(filepath.Join(sn.Dir, snapStateFile), append(big, `"}`...), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", "does not parse", func() {
			if err := os.WriteFile(filepath.Join(sn.Dir, snapStateFile), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"link", "not a regular file", func() {
			root := filepath.Join(sn.Dir, snapRootDisk)
			if err := os.Remove(root); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(secret, root); err != nil {
				t.Fatal(err)
			}
		}},
		{"state link", "not a regular file", func() {
			p := filepath.Join(sn.Dir, snapStateFile)
			if err := os.Rename(p, p+".real"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p+".real", p); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(sn.Dir, snapRootDisk)
			c.do()
			_, err := vm.Create(ctx, CreateRequest{Name: "clone", From: sn.Name}, noProgress{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("create --from a snapshot with a tampered %s = %v, want %q", c.name, err, c.want)
			}
			if _, err := vm.st.GetVM(ctx, "clone"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("a refused clone left a row: %v", err)
			}
			if ids, _ := vm.ws.List(); len(ids) != 1 {
				t.Fatalf("a refused clone left a VM directory: %v", ids)
			}
			// Put the snapshot back as it was saved.
			p := filepath.Join(sn.Dir, snapStateFile)
			_ = os.Remove(p)
			_ = os.Remove(p + ".real")
			if err := os.WriteFile(p, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(root); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				_ = os.Remove(root)
				if err := os.WriteFile(root, []byte("frozen"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// Untampered, the clone is made; a state edited after that refuses its
	// start, which leaves the clone to resume once the snapshot is sound.
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: sn.Name}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	tamper(t, sn, func(s *vmm.State) { s.VCPUs = 64 })
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err == nil || !strings.Contains(err.Error(), "vCPUs") {
		t.Fatalf("start of a clone whose snapshot was tampered with = %v", err)
	}
	if got := stateOf(t, vm, "clone"); got.RestoreFrom != sn.ID {
		t.Fatalf("a refused restore dropped restore_from: %+v", got)
	}
}

// TestRestoreRefusedAfterAVMMUpgrade goes through the driver's own check:
// a VMM of another version than the one that saved refuses the state,
// with the reason, and the clone keeps its snapshot to resume later.
func TestRestoreRefusedAfterAVMMUpgrade(t *testing.T) {
	vm, d, _, sn, _ := snapped(t)
	ctx := context.Background()
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: sn.Name}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	d.Version = "fake-2"
	_, err := vm.Start(ctx, "clone", "", noProgress{})
	if !errors.Is(err, vmm.ErrMismatch) || !strings.Contains(err.Error(), "fake-2") {
		t.Fatalf("restore under another VMM version = %v", err)
	}
	if got := stateOf(t, vm, "clone"); got.State != store.VMFailed || got.RestoreFrom != sn.ID {
		t.Fatalf("clone after a refused restore: %+v", got)
	}
	if n := len(d.Running()); n != 1 {
		t.Fatalf("%d fake VMMs run, want only the parent", n)
	}
}

// TestRetriedFirstStartResumesOverFreshDisks: a first start that resumed
// the guest and then failed (here its identity; a Ctrl-C or a killed
// bangerd does the same) let the guest write to the clone's disk. The next
// start resumes the saved memory again, so it must get the saved disks
// again, not the ones the aborted run left.
func TestRetriedFirstStartResumesOverFreshDisks(t *testing.T) {
	vm, d, _, sn, res := snapped(t)
	ctx := context.Background()
	clone, err := vm.Create(ctx, CreateRequest{Name: "clone", From: sn.Name}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	frozen, err := os.ReadFile(filepath.Join(sn.Dir, snapRootDisk))
	if err != nil {
		t.Fatal(err)
	}
	res.fail = true
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err == nil {
		t.Fatal("a clone whose identity failed started")
	}
	// What the guest wrote while it ran.
	if err := os.WriteFile(clone.COWDevice, []byte("written by the aborted run"), 0o600); err != nil {
		t.Fatal(err)
	}
	res.fail = false
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(clone.COWDevice)
	if err != nil || !bytes.Equal(got, frozen) {
		t.Fatalf("the retried restore resumed over the disk the aborted run left (%q, %v)", got, err)
	}
	specs := d.Specs()
	if specs[len(specs)-1].Restore == nil {
		t.Fatal("the retried first start did not resume")
	}
}

// TestCreateFromRacingSnapshotRm: whichever of a create --from and a
// snapshot rm of its snapshot wins, no VM is left whose snapshot is gone.
func TestCreateFromRacingSnapshotRm(t *testing.T) {
	vm, _, _, sn, _ := snapped(t)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		name := "s" + strings.Repeat("x", i+1)
		s2 := sn
		s2.ID, s2.Name = newVMID(), name
		s2.Dir = vm.snapshotDir(s2.ID)
		if err := os.CopyFS(s2.Dir, os.DirFS(sn.Dir)); err != nil {
			t.Fatal(err)
		}
		if err := vm.st.PutSnapshot(ctx, s2); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- vm.RemoveSnapshot(ctx, name) }()
		c, cerr := vm.Create(ctx, CreateRequest{Name: "c" + name[1:], From: name}, noProgress{})
		<-done
		if cerr != nil {
			continue
		}
		if _, err := vm.st.GetSnapshotByID(ctx, c.RestoreFrom); err != nil {
			t.Fatalf("round %d: clone %s was made but its snapshot is gone: %v", i, c.Name, err)
		}
	}
}

// TestSnapshotOfAVMWithALongName: the default name of a snapshot of a VM
// whose name is already 63 characters still is a valid name.
func TestSnapshotOfAVMWithALongName(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.Resume = (&resumer{}).resume
	ctx := context.Background()
	long := strings.Repeat("a", 63)
	v.Name = long
	if err := vm.st.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, long, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	sn, err := vm.Snapshot(ctx, SnapshotRequest{VM: long}, noProgress{})
	if err != nil {
		t.Fatalf("default-named snapshot of a VM with a 63-character name: %v", err)
	}
	if len(sn.Name) > 63 {
		t.Fatalf("default name %q is too long", sn.Name)
	}
}

// FuzzParseSnapState: whatever a snapshot's state.json holds, the parser
// returns an error or a state whose files are plain names.
func FuzzParseSnapState(f *testing.F) {
	f.Add([]byte(`{"vmm":"qemu","vmm_version":"7.2.22","memory_mib":512,"vcpus":2,"drives":1,"files":["qemu.state"]}`))
	f.Add([]byte(`{"files":["../x"]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseSnapState(b)
		if err != nil {
			return
		}
		for _, n := range st.Files {
			if !plainName(n) || strings.Contains(n, "/") {
				t.Fatalf("accepted file name %q", n)
			}
		}
	})
}

// TestFailedFreezeLeavesNothingAndTheVMRunning: a disk that cannot be
// frozen (disk full, or gone) fails the snapshot before the state is
// saved; no row or file is left and the guest runs on.
func TestFailedFreezeLeavesNothingAndTheVMRunning(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.Resume = (&resumer{}).resume
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(stateOf(t, vm, v.Name).COWDevice); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{}); err == nil ||
		!strings.Contains(err.Error(), "freeze the root disk") {
		t.Fatalf("snapshot whose disk cannot be frozen = %v", err)
	}
	if list, _ := vm.st.ListSnapshots(ctx); len(list) != 0 {
		t.Fatalf("a failed freeze left records: %+v", list)
	}
	if ents, _ := os.ReadDir(filepath.Join(vm.cfg.StateDir, "snapshots")); len(ents) != 0 {
		t.Fatalf("a failed freeze left files: %v", ents)
	}
	if d.Running()[0].Paused() {
		t.Fatal("the VM stayed paused after a failed freeze")
	}
}

// TestSnapshotChains: a clone can be saved in turn, and a clone of that
// snapshot resumes the first clone's guest; each snapshot stands alone, so
// the first one can go once its clone has started.
func TestSnapshotChains(t *testing.T) {
	vm, d, _, sn, _ := snapped(t)
	ctx := context.Background()
	if _, err := vm.Create(ctx, CreateRequest{Name: "c1", From: sn.Name}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, "c1", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: "c1", Name: "s2"}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveSnapshot(ctx, sn.Name); err != nil {
		t.Fatalf("remove the first snapshot of a chain: %v", err)
	}
	if _, err := vm.Create(ctx, CreateRequest{Name: "c2", From: "s2"}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, "c2", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	var got *vmmtest.Saved
	for _, m := range d.Running() {
		if r := m.Restored(); r != nil && r.VM == "c1" {
			got = r
		}
	}
	if got == nil {
		t.Fatal("c2 did not resume the guest of c1")
	}
}

// phaseWatch calls at with each phase a snapshot reports.
type phaseWatch struct {
	noProgress
	at func(string)
}

func (w phaseWatch) Phase(s string) { w.at(s) }

// TestSnapshotResumesBeforeItIsReady: from its pause until the VM runs
// again, the snapshot's row says saving, which is what a restarted
// bangerd resumes VMs by; a guest paused under a ready row would stay
// paused after a kill there.
func TestSnapshotResumesBeforeItIsReady(t *testing.T) {
	for _, stop := range []bool{false, true} {
		vm, d, v := fakeVM(t)
		d.Resume = (&resumer{}).resume
		ctx := context.Background()
		if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
			t.Fatal(err)
		}
		m := d.Running()[0]
		checked := false
		w := phaseWatch{at: func(s string) {
			if s != "recording the snapshot" {
				return
			}
			checked = true
			if m.Paused() {
				t.Errorf("stop %v: the VM is still paused when its snapshot is recorded ready", stop)
			}
		}}
		if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1", Stop: stop}, w); err != nil {
			t.Fatal(err)
		}
		if !checked {
			t.Errorf("stop %v: the snapshot did not say it records itself", stop)
		}
	}
}

// TestCancelledFirstStartOfAClone: a first start given up while it waits
// for the guest (Ctrl-C) leaves nothing running, keeps the clone's
// snapshot, and the next start resumes it again.
func TestCancelledFirstStartOfAClone(t *testing.T) {
	vm, d, _, sn, _ := snapped(t)
	ctx := context.Background()
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: sn.Name}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	d.NotReady = true
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := vm.Start(cctx, "clone", "", noProgress{})
	cancel()
	if err == nil {
		t.Fatal("a cancelled first start succeeded")
	}
	if got := stateOf(t, vm, "clone"); got.RestoreFrom != sn.ID || got.State != store.VMFailed {
		t.Fatalf("clone after a cancelled first start: %+v", got)
	}
	if n := len(d.Running()); n != 1 {
		t.Fatalf("%d fake VMMs run after a cancelled first start, want only the parent", n)
	}
	err = vm.RemoveSnapshot(ctx, sn.Name)
	var inUse *store.InUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), "banger vm start clone") {
		t.Fatalf("rm of the snapshot a clone still needs = %v, want in use, naming vm start", err)
	}
	d.NotReady = false
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if specs := d.Specs(); specs[len(specs)-1].Restore == nil {
		t.Fatal("the start after a cancelled one booted instead of resuming")
	}
	if got := stateOf(t, vm, "clone"); got.RestoreFrom != "" || got.State != store.VMRunning {
		t.Fatalf("clone after its first start: %+v", got)
	}
}

// TestConcurrentSnapshotsOfOneVM: two snapshots of one VM at once take
// turns on the VM's lock; both are saved whole and the VM runs after.
// Two of one name: one is saved, the other refused.
func TestConcurrentSnapshotsOfOneVM(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.Resume = (&resumer{}).resume
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	for _, names := range [][2]string{{"a", "b"}, {"c", "c"}} {
		errs := make(chan error, 2)
		for _, n := range names {
			go func() {
				_, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: n}, noProgress{})
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		if names[0] != names[1] && (e1 != nil || e2 != nil) {
			t.Fatalf("two snapshots of one VM: %v, %v", e1, e2)
		}
		if names[0] == names[1] && (e1 == nil) == (e2 == nil) {
			t.Fatalf("two snapshots of one name: %v, %v", e1, e2)
		}
	}
	sns, _ := vm.st.ListSnapshots(ctx)
	if len(sns) != 3 {
		t.Fatalf("snapshots = %d, want a, b and c", len(sns))
	}
	for _, sn := range sns {
		if _, err := readSnapState(sn); err != nil || sn.State != store.SnapshotReady {
			t.Errorf("snapshot %s: %s, %v", sn.Name, sn.State, err)
		}
	}
	if d.Running()[0].Paused() {
		t.Fatal("the VM stayed paused")
	}
}

// TestReconcileDeletesRemovalsCutShort: a snapshot rm renames the
// directory aside before it deletes it; a bangerd killed during the
// (long, for a big memory file) delete leaves it for the next one.
func TestReconcileDeletesRemovalsCutShort(t *testing.T) {
	vm, _, _, sn, _ := snapped(t)
	ctx := context.Background()
	if err := vm.RemoveSnapshot(ctx, sn.Name); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(sn.Dir)); len(ents) != 0 {
		t.Fatalf("snapshot rm left %v", ents)
	}
	left := mkdir(t, vm.snapshotDir(snapTrashPrefix+"0123456789abcdef"))
	if err := os.WriteFile(filepath.Join(left, "qemu.state"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	keep := mkdir(t, vm.snapshotDir("fedcba9876543210"))
	if err := vm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a removal cut short was left: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a snapshot directory that is not a removal's was deleted: %v", err)
	}
}

// TestSnapshotRmRemovesTheRowItRead: a snapshot rm that read one
// snapshot's row, while that snapshot was removed and another made under
// its name, must not delete the new one's row.
func TestSnapshotRmRemovesTheRowItRead(t *testing.T) {
	vm, _, _, sn, _ := snapped(t)
	ctx := context.Background()
	old := sn
	if err := vm.RemoveSnapshot(ctx, sn.Name); err != nil {
		t.Fatal(err)
	}
	// The snapshot made again under the name.
	again, err := vm.Snapshot(ctx, SnapshotRequest{VM: sn.VMName, Name: sn.Name}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	// What the stale rm goes on with: the row it read.
	vm.dropSnapshot(ctx, old)
	if _, err := vm.st.GetSnapshotByID(ctx, again.ID); err != nil {
		t.Fatalf("removing a stale snapshot removed the one made under its name since: %v", err)
	}
}

// TestSnapshotOfAnUnalignedMemorySize: a VM whose memory is not a whole
// number of MiB (--memory in bytes) is saved with its MiB, as the VMM
// gets it, and its snapshot's state still agrees with the record.
func TestSnapshotOfAnUnalignedMemorySize(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.Resume = (&resumer{}).resume
	ctx := context.Background()
	v.MemoryBytes = 512<<20 + 12345
	if err := vm.st.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: "s1"}, noProgress{}); err != nil {
		t.Fatalf("create --from the snapshot of a VM with unaligned memory: %v", err)
	}
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
}
