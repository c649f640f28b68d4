package daemon

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/store"
)

// waitUsers waits until n callers hold or wait for the lock of id.
func waitUsers(t *testing.T, vm *vmManager, id string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); vm.locks.Users(id) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d callers of the lock of %s, want %d", vm.locks.Users(id), id, n)
		}
	}
}

// A stop or a forced remove that read the VM before a start recorded its
// run dir, then waited for the lock while that start ran, must act on the
// row the start left, not the one it read: releasing by the stale row left
// the started VM's run dir behind.
func TestStopAndRemoveRacingStart(t *testing.T) {
	for _, op := range []string{"stop", "rm -f"} {
		t.Run(op, func(t *testing.T) {
			vm, d, v := fakeVM(t)
			unlock := vm.locks.MustLock(v.ID)
			opErr := make(chan error, 1)
			go func() {
				if op == "stop" {
					_, err := vm.Stop(context.Background(), v.Name)
					opErr <- err
				} else {
					opErr <- vm.Remove(context.Background(), v.Name, true)
				}
			}()
			waitUsers(t, vm, v.ID, 2) // it has read the row and waits
			// A start runs meanwhile, holding the lock.
			if _, err := vm.startLocked(context.Background(), v, "", noProgress{}); err != nil {
				unlock()
				t.Fatalf("start: %v", err)
			}
			unlock()
			if err := <-opErr; err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			released(t, vm, d, v)
			if op == "stop" {
				if got := stateOf(t, vm, v.Name); got.State != store.VMStopped {
					t.Errorf("after stop the VM is %q", got.State)
				}
			}
		})
	}
}

// Two VMs may publish the same host port, but not run at once: the second
// start is refused, naming the VM that holds the port, before it records
// anything; once the first stops, the second starts.
func TestStartRefusesAHostPortAnotherVMPublishes(t *testing.T) {
	vm, d, a := fakeVM(t)
	ctx := context.Background()
	a.Publish = []store.PortMap{{HostPort: 18080, GuestPort: 80}}
	if err := vm.st.PutVM(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := a
	b.ID, b.Name, b.Publish = newVMID(), "other", []store.PortMap{{HostPort: 9000, GuestPort: 90}, {HostPort: 18080, GuestPort: 8080}}
	if err := vm.st.PutVM(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, a.Name, "", noProgress{}); err != nil {
		t.Fatal(err)
	}
	_, err := vm.Start(ctx, b.Name, "", noProgress{})
	if !errors.As(err, new(vmInputError)) || !strings.Contains(err.Error(), "18080") || !strings.Contains(err.Error(), a.Name) {
		t.Fatalf("second start: %v; want an input error naming port 18080 and VM %s", err, a.Name)
	}
	if got := stateOf(t, vm, b.Name); got.State != store.VMCreated {
		t.Errorf("the refused VM is %q", got.State)
	}
	if _, err := vm.Stop(ctx, a.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Start(ctx, b.Name, "", noProgress{}); err != nil {
		t.Fatalf("start once the port is free: %v", err)
	}
	if _, err := vm.Stop(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	released(t, vm, d, b)
}

// A store that refuses to record the VM running once its guest is ready
// (a full disk, say) fails the start and undoes it: before, the start
// returned the error but left the VMM running, unwatched, with the VM
// "starting" in the store and live in the manager.
func TestStartUndoneWhenRunningCannotBeRecorded(t *testing.T) {
	vm, d, v := fakeVM(t)
	db, err := sql.Open("sqlite", filepath.Join(vm.cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER no_running BEFORE UPDATE ON vms WHEN NEW.state = 'running'
		BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
	_, err = vm.Start(context.Background(), v.Name, "", noProgress{})
	if err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("start = %v, want the store's refusal", err)
	}
	if got := stateOf(t, vm, v.Name); got.State != store.VMFailed {
		t.Errorf("the VM is %q, want failed", got.State)
	}
	released(t, vm, d, v)
}

// A VM whose stored request names a VMM this daemon no longer has (a
// driver removed, a store from elsewhere) is refused as an input error and
// left as it was; --vmm still starts it, and the request stays.
func TestStoredRequestOfAGoneVMM(t *testing.T) {
	vm, d, v := fakeVM(t)
	ctx := context.Background()
	v.VMMRequested = "gone"
	if err := vm.st.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	for _, override := range []string{"", "AUTO", "../x", "Fake"} {
		_, err := vm.Start(ctx, v.Name, override, noProgress{})
		if !errors.As(err, new(vmInputError)) {
			t.Errorf("start --vmm %q of a VM asking for a gone VMM: %v, want an input error", override, err)
		}
		if got := stateOf(t, vm, v.Name); got.State != store.VMCreated || got.RunDir != "" {
			t.Errorf("a refused start changed the VM: %q %q", got.State, got.RunDir)
		}
	}
	released(t, vm, d, v)
	if _, err := vm.Start(ctx, v.Name, "fake", noProgress{}); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, vm, v.Name); got.VMMRequested != "gone" || got.VMMKind != "fake" {
		t.Errorf("after start --vmm fake: asked %q, ran %q", got.VMMRequested, got.VMMKind)
	}
	if _, err := vm.Stop(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	released(t, vm, d, v)
}

// A stop whose caller goes away while a start holds the VM (waiting out a
// slow boot under TCG, up to minutes) stops waiting at once.
func TestWaitingForTheVMEndsWithTheCaller(t *testing.T) {
	vm, _, v := fakeVM(t)
	unlock := vm.locks.MustLock(v.ID)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := vm.Stop(ctx, v.Name)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("stop = %v, want the caller's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stop still waits for the VM's lock 5 s after its caller went away")
	}
}
