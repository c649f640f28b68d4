package opstate_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"banger/internal/daemon/opstate"
	"banger/internal/store"
)

// flakyStore is a real store whose writes a test can refuse.
type flakyStore struct {
	*store.Store
	mu     sync.Mutex
	refuse func(ctx context.Context, op store.Operation) error
	writes []store.Operation
}

func (f *flakyStore) PutOperation(ctx context.Context, op store.Operation) error {
	f.mu.Lock()
	refuse := f.refuse
	f.mu.Unlock()
	if refuse != nil {
		if err := refuse(ctx, op); err != nil {
			return err
		}
	}
	if err := f.Store.PutOperation(ctx, op); err != nil {
		return err
	}
	f.mu.Lock()
	f.writes = append(f.writes, op)
	f.mu.Unlock()
	return nil
}

func (f *flakyStore) setRefuse(r func(context.Context, store.Operation) error) {
	f.mu.Lock()
	f.refuse = r
	f.mu.Unlock()
}

func newFlaky(t *testing.T) (*opstate.Manager, *flakyStore) {
	t.Helper()
	f := &flakyStore{Store: openStore(t, filepath.Join(t.TempDir(), "banger.db"))}
	m := opstate.New(f, nil)
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	return m, f
}

func waitStored(t *testing.T, m *opstate.Manager, st *store.Store, id string) (live, stored store.Operation) {
	t.Helper()
	live, err := m.Wait(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	stored, err = st.GetOperation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return live, stored
}

// The bug of issue 10: a fetch reported its progress in "B", the store
// refused every snapshot carrying it, the terminal one included, and the
// operation stayed running for good with its error lost. Every unit outside
// the store's set, on every way an operation ends, must still end it.
func TestUnknownUnitNeverKeepsAnOperationRunning(t *testing.T) {
	for _, end := range []string{"fails", "is cancelled", "succeeds"} {
		t.Run(end, func(t *testing.T) {
			m, st := newManager(t)
			ctx := context.Background()
			reported := make(chan struct{})
			op, err := m.Start(ctx, "image pull", "x", func(ctx context.Context, p *opstate.Progress) error {
				p.Phase("pull")
				p.SetTotal(1000, "B")
				p.Add(400)
				close(reported)
				switch end {
				case "fails":
					return errors.New("layer 2/3: registry refused the blob: 403 Forbidden")
				case "is cancelled":
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			<-reported
			if end == "is cancelled" {
				if _, err := m.Cancel(ctx, op.ID); err != nil {
					t.Fatal(err)
				}
			}
			live, stored := waitStored(t, m, st, op.ID)
			want := map[string]string{"fails": opstate.Failed, "is cancelled": opstate.Cancelled, "succeeds": opstate.Succeeded}[end]
			for _, got := range []store.Operation{live, stored} {
				if got.State != want || got.Unit != store.UnitNone || got.Done != 400 && end != "succeeds" {
					t.Fatalf("operation = %+v, want %s with its progress and no unit", got, want)
				}
			}
			if end == "fails" && stored.Error != "layer 2/3: registry refused the blob: 403 Forbidden" {
				t.Fatalf("stored error %q, want the real error", stored.Error)
			}
			if end == "is cancelled" && stored.Error != "cancelled by request" {
				t.Fatalf("stored error %q", stored.Error)
			}
		})
	}
}

// Progress writes that fail (a busy or full store) are only logged; the
// terminal write is made on its own.
func TestTerminalStateWrittenWhenProgressWritesFail(t *testing.T) {
	m, f := newFlaky(t)
	f.setRefuse(func(_ context.Context, op store.Operation) error {
		if op.State == opstate.Running {
			return errors.New("database is locked")
		}
		return nil
	})
	ctx := context.Background()
	op, err := m.Start(ctx, "kernel import", "k", func(ctx context.Context, p *opstate.Progress) error {
		p.Phase("extracting")
		p.SetTotal(3, opstate.UnitItems)
		p.Add(1)
		return errors.New("extracting linux.deb: unexpected EOF")
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stored := waitStored(t, m, f.Store, op.ID)
	if stored.State != opstate.Failed || stored.Error != "extracting linux.deb: unexpected EOF" || stored.Phase != "extracting" {
		t.Fatalf("stored = %+v, want failed with the real error", stored)
	}
}

// The terminal write of a cancelled operation must not use the operation's
// own (cancelled) context.
func TestTerminalStateWrittenWithALiveContext(t *testing.T) {
	m, f := newFlaky(t)
	f.setRefuse(func(ctx context.Context, _ store.Operation) error { return ctx.Err() })
	ctx := context.Background()
	started := make(chan struct{})
	op, _ := m.Start(ctx, "image pull", "x", blocking(started))
	<-started
	if _, err := m.Cancel(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	_, stored := waitStored(t, m, f.Store, op.ID)
	if stored.State != opstate.Cancelled {
		t.Fatalf("stored = %+v, want cancelled", stored)
	}
}

// A store that refuses the terminal write a few times is retried; one that
// keeps refusing leaves the terminal state in memory (Get and List say how
// the operation ended) and Shutdown writes it once the store takes it.
func TestTerminalWriteRetriedAndKept(t *testing.T) {
	t.Run("retried", func(t *testing.T) {
		m, f := newFlaky(t)
		var mu sync.Mutex
		refusals := 0
		f.setRefuse(func(_ context.Context, op store.Operation) error {
			mu.Lock()
			defer mu.Unlock()
			if opstate.Terminal(op.State) && refusals < 2 {
				refusals++
				return errors.New("database is locked")
			}
			return nil
		})
		op, _ := m.Start(context.Background(), "k", "t", func(context.Context, *opstate.Progress) error { return errors.New("boom") })
		_, stored := waitStored(t, m, f.Store, op.ID)
		if stored.State != opstate.Failed || stored.Error != "boom" {
			t.Fatalf("stored = %+v", stored)
		}
	})
	t.Run("kept until shutdown", func(t *testing.T) {
		f := &flakyStore{Store: openStore(t, filepath.Join(t.TempDir(), "banger.db"))}
		m := opstate.New(f, nil)
		f.setRefuse(func(_ context.Context, op store.Operation) error {
			if opstate.Terminal(op.State) {
				return errors.New("disk full")
			}
			return nil
		})
		ctx := context.Background()
		op, _ := m.Start(ctx, "k", "t", func(context.Context, *opstate.Progress) error { return errors.New("boom") })
		live, err := m.Wait(ctx, op.ID)
		if err != nil || live.State != opstate.Failed || live.Error != "boom" {
			t.Fatalf("live = %+v, %v", live, err)
		}
		got, err := m.Get(ctx, op.ID)
		if err != nil || got.State != opstate.Failed {
			t.Fatalf("Get = %+v, %v; want the terminal state kept in memory", got, err)
		}
		list, err := m.List(ctx, store.ListOptions{})
		if err != nil || len(list) != 1 || list[0].State != opstate.Failed {
			t.Fatalf("List = %+v, %v", list, err)
		}
		f.setRefuse(nil)
		if err := m.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		stored, err := f.GetOperation(ctx, op.ID)
		if err != nil || stored.State != opstate.Failed || stored.Error != "boom" {
			t.Fatalf("stored after shutdown = %+v, %v", stored, err)
		}
	})
}

// Work that outlives its Func (a straggling download goroutine) cannot move
// a finished operation back.
func TestLateProgressChangesNothing(t *testing.T) {
	m, st := newManager(t)
	ctx := context.Background()
	var late *opstate.Progress
	op, _ := m.Start(ctx, "k", "t", func(_ context.Context, p *opstate.Progress) error {
		late = p
		p.Phase("work")
		return errors.New("boom")
	})
	final, err := m.Wait(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	late.Phase("late")
	late.SetTotal(5, opstate.UnitBytes)
	late.Add(5)
	got, _ := m.Get(ctx, op.ID)
	stored, _ := st.GetOperation(ctx, op.ID)
	for _, o := range []store.Operation{got, stored} {
		if o.State != opstate.Failed || o.Phase != "work" || o.Done != 0 || o.Error != "boom" {
			t.Fatalf("after late progress: %+v, want %+v", o, final)
		}
	}
}
