package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/vmm/vmmtest"
	"banger/internal/guest/proto"
	"banger/internal/store"
)

// resumer is a fake agent's answer to resumed requests: it records them
// and hands out a fresh host key each time.
type resumer struct {
	mu   sync.Mutex
	reqs []proto.ResumedRequest
	fail bool
}

func (r *resumer) resume(_ context.Context, req proto.ResumedRequest) proto.ResumedResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	if r.fail {
		return proto.ResumedResult{Steps: []proto.ResumedStep{{Duty: "entropy", Status: "failed", Error: "no pool"}}}
	}
	return proto.ResumedResult{Steps: []proto.ResumedStep{{Duty: "hostname", Status: "done"}}, HostKeys: []string{key}}
}

func (r *resumer) requests() []proto.ResumedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.ResumedRequest(nil), r.reqs...)
}

// TestSnapshotAndCloneThroughTheFakeVMM takes a snapshot of a running VM,
// makes a clone from it, and checks that the clone's first start resumes
// the saved guest (not a boot), gives it its own identity through the
// agent, records its new host key, and that its second start boots.
func TestSnapshotAndCloneThroughTheFakeVMM(t *testing.T) {
	vm, d, v := fakeVM(t)
	res := &resumer{}
	d.Resume = res.resume
	ctx := context.Background()
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{}); err == nil ||
		!strings.Contains(err.Error(), "only a running VM") {
		t.Fatalf("snapshot of a VM that is not running = %v", err)
	}
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	sn, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if sn.State != store.SnapshotReady || sn.VMMKind != vmmtest.Name || sn.VMMVersion == "" || sn.SizeBytes <= 0 {
		t.Fatalf("snapshot recorded as %+v", sn)
	}
	for _, f := range sn.Files {
		if _, err := os.Stat(filepath.Join(sn.Dir, f)); err != nil {
			t.Errorf("snapshot file %s: %v", f, err)
		}
	}
	if m := d.Running()[0]; m.Paused() {
		t.Fatal("the VM stayed paused after its snapshot")
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{}); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second snapshot of the same name = %v", err)
	}

	clone, err := vm.Create(ctx, CreateRequest{Name: "clone", From: "s1"}, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if clone.RestoreFrom != sn.ID || clone.MemoryBytes != v.MemoryBytes || clone.ImageID != v.ImageID {
		t.Fatalf("clone recorded as %+v", clone)
	}
	if err := vm.RemoveSnapshot(ctx, "s1"); err == nil {
		t.Fatal("a snapshot a clone still needs was removed")
	}
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	var restored *vmmtest.Machine
	for _, m := range d.Running() {
		if m.Restored() != nil {
			restored = m
		}
	}
	if restored == nil || restored.Restored().VM != v.Name {
		t.Fatalf("the clone's first start did not resume the snapshot of %s", v.Name)
	}
	reqs := res.requests()
	if len(reqs) != 1 || reqs[0].Hostname != "clone" {
		t.Fatalf("resumed requests: %+v", reqs)
	}
	kh, err := os.ReadFile(vm.knownHosts(clone.ID))
	if err != nil || !strings.Contains(string(kh), "clone.banger ssh-ed25519 ") {
		t.Fatalf("the clone's known_hosts: %q, %v", kh, err)
	}
	if got := stateOf(t, vm, "clone"); got.RestoreFrom != "" || got.State != store.VMRunning {
		t.Fatalf("clone after its first start: %+v", got)
	}
	// Its next start boots from its own disk.
	if _, err := vm.Stop(ctx, "clone"); err != nil {
		t.Fatal(err)
	}
	before := len(d.Specs())
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if specs := d.Specs(); len(specs) != before+1 || specs[len(specs)-1].Restore != nil {
		t.Fatal("the clone's second start resumed the snapshot again")
	}
	if err := vm.RemoveSnapshot(ctx, "s1"); err != nil {
		t.Fatalf("remove the snapshot once no clone needs it: %v", err)
	}
	if _, err := os.Stat(sn.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the snapshot's files are left: %v", err)
	}
}

// TestCloneThatCannotTakeItsIdentityFails: a guest whose resume fails must
// not run with its parent's identity: the start fails and nothing of it is
// left running; the clone stays to resume again.
func TestCloneThatCannotTakeItsIdentityFails(t *testing.T) {
	vm, d, v := fakeVM(t)
	res := &resumer{}
	d.Resume = res.resume
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1", Stop: true}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, vm, v.Name); got.State != store.VMStopped {
		t.Fatalf("--stop left the VM %s", got.State)
	}
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: "s1", VCPUs: 7}, noProgress{}); err == nil {
		t.Fatal("a clone with a vCPU count of its own was made")
	}
	if _, err := vm.Create(ctx, CreateRequest{Name: "clone", From: "s1"}, noProgress{}); err != nil {
		t.Fatal(err)
	}
	res.fail = true
	if _, err := vm.Start(ctx, "clone", "", noProgress{}); err == nil || !strings.Contains(err.Error(), "own identity") {
		t.Fatalf("start of a clone whose resume failed = %v", err)
	}
	if got := stateOf(t, vm, "clone"); got.State != store.VMFailed || got.RestoreFrom == "" {
		t.Fatalf("clone after a failed resume: %+v", got)
	}
	if n := len(d.Running()); n != 0 {
		t.Fatalf("%d fake VMMs still run after the failed resume", n)
	}
}

// TestSnapshotRefusedWithAnOldAgent: an agent that does not serve resumed
// requests cannot make clones, so its VM is not saved.
func TestSnapshotRefusedWithAnOldAgent(t *testing.T) {
	vm, _, v := fakeVM(t)
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	_, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{})
	if err == nil || !strings.Contains(err.Error(), "rebuild the image") {
		t.Fatalf("snapshot with an agent that cannot resume = %v", err)
	}
	if list, _ := vm.st.ListSnapshots(ctx); len(list) != 0 {
		t.Fatalf("a refused snapshot left records: %+v", list)
	}
}

// TestFailedSaveLeavesNothingAndTheVMRunning: a VMM that fails to save
// leaves no record or files, and the VM runs on.
func TestFailedSaveLeavesNothingAndTheVMRunning(t *testing.T) {
	vm, d, v := fakeVM(t)
	d.Resume = (&resumer{}).resume
	d.SaveErr = errors.New("disk full")
	ctx := context.Background()
	if _, err := vm.Start(ctx, v.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Snapshot(ctx, SnapshotRequest{VM: v.Name, Name: "s1"}, noProgress{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("snapshot with a failing save = %v", err)
	}
	if list, _ := vm.st.ListSnapshots(ctx); len(list) != 0 {
		t.Fatalf("a failed snapshot left records: %+v", list)
	}
	if ents, _ := os.ReadDir(filepath.Join(vm.cfg.StateDir, "snapshots")); len(ents) != 0 {
		t.Fatalf("a failed snapshot left files: %v", ents)
	}
	if m := d.Running()[0]; m.Paused() {
		t.Fatal("the VM stayed paused after a failed snapshot")
	}
	if got := stateOf(t, vm, v.Name); got.State != store.VMRunning {
		t.Fatalf("the VM is %s after a failed snapshot", got.State)
	}
}
