package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/vmm/vmmtest"
	"banger/internal/store"
)

// warmVM is fakeVM with the warm pool on (warm = 1), agents that can
// resume, and an sshd that is up at once.
func warmVM(t *testing.T) (*vmManager, *vmmtest.Driver) {
	t.Helper()
	vm, d, old := fakeVM(t)
	ctx := context.Background()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 is not installed (e2fsprogs): no image to create from")
	}
	im, _ := vm.st.GetImageByID(ctx, old.ImageID)
	im.RootfsPath = filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", im.RootfsPath, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := vm.st.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	vm.cfg.Warm = 1
	d.Resume = (&resumer{}).resume
	vm.warm.sshdUp = func(context.Context, vmm.AgentLink) (bool, error) { return true, nil }
	vm.warm.poll = 10 * time.Millisecond
	return vm, d
}

// run does what POST /v1/vms with start does (handleCreateVM).
func run(t *testing.T, vm *vmManager, cr CreateRequest) store.VM {
	t.Helper()
	cr.StartNow = true
	if err := vm.validate(&cr); err != nil {
		t.Fatal(err)
	}
	v, err := vm.Run(context.Background(), cr, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// settled waits for the pool's build to end and returns the warm snapshots.
func settled(t *testing.T, vm *vmManager) []store.Snapshot {
	t.Helper()
	vm.warm.wg.Wait() // the pool stays open, unlike with wait
	sns, err := vm.warm.warmSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sns
}

// noHelpers checks that no helper VM is left, in the store or running.
func noHelpers(t *testing.T, vm *vmManager, d *vmmtest.Driver) {
	t.Helper()
	vms, err := vm.st.ListVMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if strings.HasPrefix(v.Name, warmHelperPrefix) {
			t.Errorf("helper VM %s left (%s)", v.Name, v.State)
		}
	}
	for _, m := range d.Running() {
		if strings.HasPrefix(m.Name(), warmHelperPrefix) {
			t.Errorf("helper VM %s still runs", m.Name())
		}
	}
}

// newDefaultImage makes the default image another one, img2, of another
// id and the same files (a store row cannot change its id under the same
// name while VMs use it).
func newDefaultImage(t *testing.T, vm *vmManager) {
	t.Helper()
	ctx := context.Background()
	im, err := vm.st.GetImage(ctx, "img")
	if err != nil {
		t.Fatal(err)
	}
	im.ID, im.Name = "i2", "img2"
	if err := vm.st.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	vm.cfg.DefaultImageName = "img2"
}

func restoredMachine(d *vmmtest.Driver, name string) *vmmtest.Machine {
	for _, m := range d.Running() {
		if m.Name() == name {
			return m
		}
	}
	return nil
}

// TestWarmPoolMakesASnapshotAndVMRunResumesIt: the first vm run boots cold
// and says why; the pool then makes a warm snapshot with no helper left;
// the next vm run resumes it and says so; a shape flag boots cold.
func TestWarmPoolMakesASnapshotAndVMRunResumesIt(t *testing.T) {
	vm, d := warmVM(t)
	first := run(t, vm, CreateRequest{Name: "a"})
	if !strings.Contains(first.VMMReason, "booted cold: no warm snapshot yet") {
		t.Fatalf("first run's reason %q", first.VMMReason)
	}
	sns := settled(t, vm)
	if len(sns) != 1 || !sns[0].Warm || sns[0].State != store.SnapshotReady || sns[0].AgentVersion != buildinfo.Version {
		t.Fatalf("warm snapshots after the first cold start: %+v", sns)
	}
	noHelpers(t, vm, d)

	second := run(t, vm, CreateRequest{Name: "b"})
	if want := "resumed from warm snapshot " + sns[0].Name; !strings.HasPrefix(second.VMMReason, want) {
		t.Fatalf("second run's reason %q, want it to start with %q", second.VMMReason, want)
	}
	if m := restoredMachine(d, "b"); m == nil || m.Restored() == nil {
		t.Fatal("the second vm run did not resume the warm snapshot")
	}
	// A warm snapshot used once stays.
	if got := settled(t, vm); len(got) != 1 || got[0].Name != sns[0].Name {
		t.Fatalf("warm snapshots after a use: %+v", got)
	}

	third := run(t, vm, CreateRequest{Name: "c", VCPUs: 3})
	if m := restoredMachine(d, "c"); m == nil || m.Restored() != nil {
		t.Fatal("a vm run with --cpus 3 resumed the warm snapshot")
	}
	if !strings.Contains(third.VMMReason, "booted cold: shape differs") {
		t.Fatalf("third run's reason %q", third.VMMReason)
	}
	if _, err := vm.Create(context.Background(), CreateRequest{Name: warmHelperPrefix + "mine"}, noProgress{}); err == nil ||
		!strings.Contains(err.Error(), "warm pool") {
		t.Fatalf("a user's VM with the helper's prefix = %v", err)
	}
}

// TestWarmSnapshotGoesStale: a changed image id or agent version makes
// the warm snapshot stale: the next vm run boots cold and says so, and the
// pool removes it and makes a new one.
func TestWarmSnapshotGoesStale(t *testing.T) {
	for _, change := range []string{"image", "agent", "image file"} {
		t.Run(change, func(t *testing.T) {
			vm, d := warmVM(t)
			run(t, vm, CreateRequest{Name: "a"})
			old := settled(t, vm)
			if len(old) != 1 {
				t.Fatalf("warm snapshots: %+v", old)
			}
			switch change {
			case "image":
				newDefaultImage(t, vm)
			case "image file":
				// A registered image rebuilt in place keeps its id.
				im, err := vm.st.GetImage(context.Background(), "img")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(im.RootfsPath, 8<<20); err != nil {
					t.Fatal(err)
				}
			case "agent":
				was := buildinfo.Version
				buildinfo.Version = "dev-next"
				t.Cleanup(func() { buildinfo.Version = was })
				d.AgentVersion = "dev-next"
			}
			b := run(t, vm, CreateRequest{Name: "b"})
			if !strings.Contains(b.VMMReason, "stale") {
				t.Fatalf("reason after the change: %q", b.VMMReason)
			}
			sns := settled(t, vm)
			if len(sns) != 1 || sns[0].ID == old[0].ID {
				t.Fatalf("warm snapshots after the change: %+v (old %s)", sns, old[0].ID)
			}
			if _, err := os.Stat(old[0].Dir); !os.IsNotExist(err) {
				t.Errorf("the stale snapshot's files are left: %v", err)
			}
			c := run(t, vm, CreateRequest{Name: "c"})
			if !strings.HasPrefix(c.VMMReason, "resumed from warm snapshot "+sns[0].Name) {
				t.Fatalf("reason once remade: %q", c.VMMReason)
			}
			noHelpers(t, vm, d)
		})
	}
}

// TestWarmZeroMakesNothing: with warm = 0 a cold vm run makes no snapshot.
func TestWarmZeroMakesNothing(t *testing.T) {
	vm, d := warmVM(t)
	vm.cfg.Warm = 0
	a := run(t, vm, CreateRequest{Name: "a"})
	if sns := settled(t, vm); len(sns) != 0 {
		t.Fatalf("warm = 0 made %+v", sns)
	}
	if !strings.Contains(a.VMMReason, "warm = 0") {
		t.Fatalf("reason %q", a.VMMReason)
	}
	if n := len(d.Specs()); n != 1 {
		t.Fatalf("%d VMM starts, want the user's one", n)
	}
}

// TestShutdownCancelsAWarmBuild: Shutdown during a build (waiting for the
// helper's sshd) ends it and leaves no helper VM and no snapshot.
func TestShutdownCancelsAWarmBuild(t *testing.T) {
	vm, d := warmVM(t)
	var asked atomic.Int32
	vm.warm.sshdUp = func(context.Context, vmm.AgentLink) (bool, error) {
		asked.Add(1)
		return false, nil
	}
	run(t, vm, CreateRequest{Name: "a"})
	deadline := time.Now().Add(10 * time.Second)
	for asked.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the build never waited for sshd")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !vm.warm.isBuilding() {
		t.Fatal("no build in progress")
	}
	done := make(chan struct{})
	go func() { vm.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not end the build")
	}
	noHelpers(t, vm, d)
	if sns, err := vm.st.ListSnapshots(context.Background()); err != nil || len(sns) != 0 {
		t.Fatalf("snapshots after a cancelled build: %+v, %v", sns, err)
	}
	vm.warm.Kick()
	if vm.warm.isBuilding() {
		t.Fatal("a build started after Shutdown")
	}
}

// TestFailedWarmResumeBootsCold: a clone that cannot take its identity
// fails its resume; the run then boots cold, says why, and leaves one VM.
func TestFailedWarmResumeBootsCold(t *testing.T) {
	vm, d := warmVM(t)
	run(t, vm, CreateRequest{Name: "a"})
	sns := settled(t, vm)
	if len(sns) != 1 {
		t.Fatalf("warm snapshots: %+v", sns)
	}
	d.Resume = (&resumer{fail: true}).resume
	b := run(t, vm, CreateRequest{Name: "b"})
	if b.State != store.VMRunning || !strings.Contains(b.VMMReason, "booted cold: warm snapshot "+sns[0].Name+" could not be resumed") {
		t.Fatalf("b after a failed resume: %s, reason %q", b.State, b.VMMReason)
	}
	if m := restoredMachine(d, "b"); m == nil || m.Restored() != nil {
		t.Fatal("b does not run booted cold")
	}
	if b.RestoreFrom != "" {
		t.Fatalf("b still names a snapshot to resume: %q", b.RestoreFrom)
	}
}

// TestFailedWarmBuildIsNotRetriedAtEveryRun: a build whose guest does not
// match (its agent is another banger's) is not tried again for that shape,
// and one that failed otherwise not before warmRetry: every cold vm run
// does not boot a helper VM in the background in vain. A new image is a
// new shape and is tried at once.
func TestFailedWarmBuildIsNotRetriedAtEveryRun(t *testing.T) {
	t.Run("agent mismatch", func(t *testing.T) {
		vm, d := warmVM(t)
		d.AgentVersion = "an-older-banger"
		run(t, vm, CreateRequest{Name: "a"})
		if sns := settled(t, vm); len(sns) != 0 {
			t.Fatalf("a mismatched guest was kept as a warm snapshot: %+v", sns)
		}
		starts := len(d.Specs()) // a and its helper
		if starts != 2 {
			t.Fatalf("%d VMM starts after the first run, want a and one helper", starts)
		}
		for _, name := range []string{"b", "c"} {
			v := run(t, vm, CreateRequest{Name: name})
			settled(t, vm)
			if !strings.Contains(v.VMMReason, "booted cold: no warm snapshot: the last warm snapshot build failed") ||
				!strings.Contains(v.VMMReason, "an-older-banger") {
				t.Fatalf("%s's reason: %q", name, v.VMMReason)
			}
		}
		if n := len(d.Specs()); n != starts+2 {
			t.Fatalf("%d VMM starts after two more runs, want %d: a helper was booted again", n, starts+2)
		}
		if r := vm.warm.heldBack(vm.warm.held); !strings.Contains(r, "banger image rm img, then banger image pull") || strings.Contains(r, "\n") {
			t.Errorf("the held reason gives no way out, or is not one line: %q", r)
		}
		// A new default image is another shape: tried at once.
		newDefaultImage(t, vm)
		d.AgentVersion = buildinfo.Version
		run(t, vm, CreateRequest{Name: "d"})
		if sns := settled(t, vm); len(sns) != 1 {
			t.Fatalf("no warm snapshot of the new image: %+v", sns)
		}
		noHelpers(t, vm, d)
	})
	t.Run("failed save", func(t *testing.T) {
		vm, d := warmVM(t)
		clock := time.Now()
		vm.warm.now = func() time.Time { return clock }
		d.SaveErr = errors.New("disk full")
		run(t, vm, CreateRequest{Name: "a"})
		settled(t, vm)
		starts := len(d.Specs())
		b := run(t, vm, CreateRequest{Name: "b"})
		settled(t, vm)
		if n := len(d.Specs()); n != starts+1 {
			t.Fatalf("%d VMM starts, want %d: the failed build was tried again at once", n, starts+1)
		}
		if !strings.Contains(b.VMMReason, "tried again in 10m") {
			t.Fatalf("b's reason: %q", b.VMMReason)
		}
		if starts != 2 || !strings.Contains(b.VMMReason, "disk full") {
			t.Fatalf("%d starts after the first run (want a and a helper); b's reason %q", starts, b.VMMReason)
		}
		clock = clock.Add(warmRetry + time.Second)
		d.SaveErr = nil
		run(t, vm, CreateRequest{Name: "c"})
		if sns := settled(t, vm); len(sns) != 1 {
			t.Fatalf("no warm snapshot once warmRetry passed: %+v", sns)
		}
		noHelpers(t, vm, d)
	})
	t.Run("VMM says at once it cannot save", func(t *testing.T) {
		// A jailed Firecracker, seen before a helper is booted.
		vm, d := warmVM(t)
		d.CanSaveErr = fmt.Errorf("%w under the jailer yet", vmm.ErrNoSnapshots)
		for _, name := range []string{"a", "b"} {
			v := run(t, vm, CreateRequest{Name: name})
			settled(t, vm)
			if !strings.Contains(v.VMMReason, "booted cold: no warm snapshot: fake: this VMM cannot save") {
				t.Fatalf("%s's reason: %q", name, v.VMMReason)
			}
		}
		if n := len(d.Specs()); n != 2 {
			t.Fatalf("%d VMM starts, want the two runs only: a helper was booted", n)
		}
	})
	t.Run("VMM cannot save", func(t *testing.T) {
		// A jailed Firecracker: tried once, not again after warmRetry.
		vm, d := warmVM(t)
		clock := time.Now()
		vm.warm.now = func() time.Time { return clock }
		d.SaveErr = fmt.Errorf("save the VM's state: %w under the jailer yet", vmm.ErrNoSnapshots)
		run(t, vm, CreateRequest{Name: "a"})
		settled(t, vm)
		starts := len(d.Specs())
		clock = clock.Add(2 * warmRetry)
		b := run(t, vm, CreateRequest{Name: "b"})
		settled(t, vm)
		if n := len(d.Specs()); n != starts+1 || !strings.Contains(b.VMMReason, "under the jailer") || strings.Contains(b.VMMReason, "tried again") {
			t.Fatalf("%d VMM starts (want %d); b's reason %q", n, starts+1, b.VMMReason)
		}
		noHelpers(t, vm, d)
	})
}

// TestHeldBackNeverSaysZero: in the last half minute of warmRetry the
// reason said "tried again in 0s" (left rounded to the nearest minute);
// it rounds up, and a held shape never applies to another one.
func TestHeldBackNeverSaysZero(t *testing.T) {
	clock := time.Now()
	w := &warmPool{now: func() time.Time { return clock }}
	s := warmShape{imageID: "i1", kernelID: "k1", vmm: "firecracker", vmmVersion: "1.14.2", vcpus: 2, memory: 1 << 30, disk: 8 << 30}
	w.hold(s, errors.New("disk full"))
	if got := w.heldBack(s); !strings.Contains(got, "tried again in 10m") {
		t.Errorf("just after the failure: %q", got)
	}
	other := s
	other.imageID = "i2"
	if got := w.heldBack(other); got != "" {
		t.Errorf("another shape is held back: %q", got)
	}
	clock = clock.Add(warmRetry - 20*time.Second)
	if got := w.heldBack(s); !strings.Contains(got, "tried again in 1m") {
		t.Errorf("20s before the retry: %q", got)
	}
	clock = clock.Add(20 * time.Second)
	if got := w.heldBack(s); got != "" {
		t.Errorf("at warmRetry: %q", got)
	}
}
