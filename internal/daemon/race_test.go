package daemon

import (
	"context"
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
