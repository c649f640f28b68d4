package opstate_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"banger/internal/daemon/opstate"
	"banger/internal/store"
)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newManager(t *testing.T) (*opstate.Manager, *store.Store) {
	t.Helper()
	st := openStore(t, filepath.Join(t.TempDir(), "banger.db"))
	m := opstate.New(st, nil)
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	return m, st
}

func TestSucceedsWithProgressPersisted(t *testing.T) {
	m, st := newManager(t)
	ctx := context.Background()
	op, err := m.Start(ctx, "pull", "debian", func(ctx context.Context, p *opstate.Progress) error {
		p.Phase("downloading")
		p.SetTotal(1000, "bytes")
		for i := 0; i < 10; i++ {
			p.Add(100)
		}
		p.Phase("unpacking")
		p.SetTotal(3, "items")
		p.Add(3)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if op.State != opstate.Queued || op.ID == "" {
		t.Fatalf("new op = %+v, want queued with an id", op)
	}
	final, err := m.Wait(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.State != opstate.Succeeded || final.Phase != "unpacking" || final.Done != 3 || final.Total != 3 || final.Unit != "items" {
		t.Fatalf("final = %+v", final)
	}
	if final.FinishedAt.IsZero() {
		t.Fatal("finished op has no FinishedAt")
	}
	stored, err := st.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.State != opstate.Succeeded || stored.Done != 3 || stored.Phase != "unpacking" {
		t.Fatalf("stored = %+v, want the final state", stored)
	}
}

func TestFailureRecordsError(t *testing.T) {
	m, st := newManager(t)
	ctx := context.Background()
	op, _ := m.Start(ctx, "pull", "x", func(context.Context, *opstate.Progress) error {
		return errors.New("sha256 mismatch")
	})
	final, err := m.Wait(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.State != opstate.Failed || final.Error != "sha256 mismatch" {
		t.Fatalf("final = %+v", final)
	}
	stored, _ := st.GetOperation(ctx, op.ID)
	if stored.State != opstate.Failed || stored.Error != "sha256 mismatch" {
		t.Fatalf("stored = %+v", stored)
	}
}

func TestPanicBecomesFailure(t *testing.T) {
	m, _ := newManager(t)
	op, _ := m.Start(context.Background(), "k", "t", func(context.Context, *opstate.Progress) error { panic("boom") })
	final, _ := m.Wait(context.Background(), op.ID)
	if final.State != opstate.Failed || final.Error == "" {
		t.Fatalf("final = %+v, want failed with an error", final)
	}
}

// blocking returns an operation func that reports it started and then waits
// for cancellation.
func blocking(started chan<- struct{}) opstate.Func {
	return func(ctx context.Context, p *opstate.Progress) error {
		p.Phase("waiting")
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}
}

func TestCancel(t *testing.T) {
	m, st := newManager(t)
	ctx := context.Background()
	started := make(chan struct{})
	op, _ := m.Start(ctx, "k", "t", blocking(started))
	<-started
	if _, err := m.Cancel(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	final, err := m.Wait(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.State != opstate.Cancelled || final.Error != "cancelled by request" {
		t.Fatalf("final = %+v", final)
	}
	stored, _ := st.GetOperation(ctx, op.ID)
	if stored.State != opstate.Cancelled {
		t.Fatalf("stored state %q, want cancelled", stored.State)
	}
	// Cancelling again is harmless and returns the final record.
	again, err := m.Cancel(ctx, op.ID)
	if err != nil || again.State != opstate.Cancelled {
		t.Fatalf("second cancel = %+v, %v", again, err)
	}
}

func TestWatchSeesProgressAndEnd(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	step := make(chan struct{})
	op, _ := m.Start(ctx, "k", "t", func(ctx context.Context, p *opstate.Progress) error {
		p.SetTotal(2, "items")
		<-step
		p.Add(1)
		<-step
		p.Add(1)
		return nil
	})
	_, ch, err := m.Watch(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	var seen []opstate.Operation
	done := make(chan struct{})
	go func() {
		defer close(done)
		for o := range ch {
			seen = append(seen, o)
			if o.Done == 1 && o.State == opstate.Running {
				step <- struct{}{}
			}
		}
	}()
	step <- struct{}{}
	<-done
	if len(seen) == 0 {
		t.Fatal("watch saw nothing")
	}
	last := seen[len(seen)-1]
	if last.State != opstate.Succeeded || last.Done != 2 {
		t.Fatalf("last update = %+v, want succeeded 2/2", last)
	}
}

func TestWatchFinishedOperation(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	op, _ := m.Start(ctx, "k", "t", func(context.Context, *opstate.Progress) error { return nil })
	if _, err := m.Wait(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	cur, ch, err := m.Watch(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.State != opstate.Succeeded {
		t.Fatalf("cur = %+v", cur)
	}
	if _, open := <-ch; open {
		t.Fatal("channel of a finished operation should be closed")
	}
}

func TestUnknownOperation(t *testing.T) {
	m, _ := newManager(t)
	if _, err := m.Get(context.Background(), "op-nope"); !errors.Is(err, opstate.ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
	if _, _, err := m.Watch(context.Background(), "op-nope"); !errors.Is(err, opstate.ErrNotFound) {
		t.Fatalf("Watch unknown = %v, want ErrNotFound", err)
	}
}

func TestShutdownCancelsAndRefusesNew(t *testing.T) {
	m, st := newManager(t)
	ctx := context.Background()
	started := make(chan struct{})
	op, _ := m.Start(ctx, "k", "t", blocking(started))
	<-started
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	stored, _ := st.GetOperation(ctx, op.ID)
	if stored.State != opstate.Cancelled || stored.Error != opstate.ShutdownReason {
		t.Fatalf("stored = %+v, want cancelled by shutdown", stored)
	}
	if _, err := m.Start(ctx, "k", "t", blocking(make(chan struct{}))); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

func TestRecoverMarksInterruptedOperationsFailed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	ctx := context.Background()
	// A daemon that died mid-operation leaves rows queued or running.
	st := openStore(t, path)
	now := time.Now().UTC()
	for _, o := range []store.Operation{
		{ID: "op-a", Kind: "pull", State: store.StateRunning, Phase: "downloading", CreatedAt: now, UpdatedAt: now},
		{ID: "op-b", Kind: "pull", State: store.StateQueued, CreatedAt: now, UpdatedAt: now},
		{ID: "op-c", Kind: "pull", State: store.StateSucceeded, CreatedAt: now, UpdatedAt: now, FinishedAt: now},
	} {
		if err := st.PutOperation(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	m := opstate.New(st, nil)
	n, err := m.Recover(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Recover = %d, %v; want 2", n, err)
	}
	for id, want := range map[string]string{"op-a": opstate.Failed, "op-b": opstate.Failed, "op-c": opstate.Succeeded} {
		got, err := m.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != want {
			t.Errorf("%s state = %s, want %s", id, got.State, want)
		}
		if want == opstate.Failed && got.Error != opstate.CrashReason {
			t.Errorf("%s error = %q, want the crash reason", id, got.Error)
		}
	}
}

func TestListShowsLiveProgress(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	hold := make(chan struct{})
	reported := make(chan struct{})
	op, _ := m.Start(ctx, "k", "t", func(ctx context.Context, p *opstate.Progress) error {
		p.SetTotal(10, "items")
		p.Add(7) // below the persistence throttle: only memory has it
		close(reported)
		<-hold
		return nil
	})
	<-reported
	ops, err := m.List(ctx, store.ListOptions{ActiveOnly: true})
	close(hold)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].ID != op.ID || ops[0].Done != 7 {
		t.Fatalf("List = %+v, want the live op at 7/10", ops)
	}
}

func TestConcurrentOperations(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := m.Start(ctx, "k", "t", func(ctx context.Context, p *opstate.Progress) error {
				p.SetTotal(100, "items")
				for j := 0; j < 100; j++ {
					p.Add(1)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			final, err := m.Wait(ctx, op.ID)
			if err != nil || final.State != opstate.Succeeded || final.Done != 100 {
				t.Errorf("op %s = %+v, %v", op.ID, final, err)
			}
		}()
	}
	wg.Wait()
}
