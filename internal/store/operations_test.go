package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var t0 = time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)

func sameOp(t *testing.T, got, want Operation) {
	t.Helper()
	if got.ID != want.ID || got.Kind != want.Kind || got.Target != want.Target || got.Phase != want.Phase ||
		got.State != want.State || got.Done != want.Done || got.Total != want.Total || got.Unit != want.Unit ||
		got.Error != want.Error || !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) ||
		!got.FinishedAt.Equal(want.FinishedAt) {
		t.Errorf("operation mismatch\n got  %+v\n want %+v", got, want)
	}
	for _, tm := range []time.Time{got.CreatedAt, got.UpdatedAt, got.FinishedAt} {
		if tm.Location() != time.UTC {
			t.Errorf("time %v is not in UTC", tm)
		}
	}
}

func TestOperationRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	paris := time.FixedZone("CEST", 2*3600)
	ops := []Operation{
		{ID: "op-1", Kind: "image.pull", Target: "debian-bookworm", Phase: "download", State: StateRunning,
			Done: 1 << 40, Total: 1<<41 + 7, Unit: UnitBytes,
			CreatedAt: t0.In(paris), UpdatedAt: t0.Add(time.Nanosecond)},
		{ID: "op-2", Kind: "vm.start", Target: "web", State: StateFailed, Error: "kvm: permission denied\nsecond line",
			Unit: UnitItems, Done: 3, Total: 5,
			CreatedAt: t0, UpdatedAt: t0.Add(time.Second), FinishedAt: t0.Add(2 * time.Second)},
		{ID: "op-ünï", Kind: "k", State: StateQueued, CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	}
	for _, op := range ops {
		if err := s.PutOperation(ctx, op); err != nil {
			t.Fatalf("put %s: %v", op.ID, err)
		}
		got, err := s.GetOperation(ctx, op.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := op
		if want.UpdatedAt.IsZero() {
			want.UpdatedAt = want.CreatedAt
		}
		sameOp(t, got, want)
	}
}

func TestOperationDefaults(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.PutOperation(ctx, Operation{ID: "a", Kind: "k", State: StateSucceeded, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOperation(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !got.UpdatedAt.Equal(t0) || !got.FinishedAt.Equal(t0) {
		t.Errorf("a terminal operation without times: updated %v, finished %v; want both %v", got.UpdatedAt, got.FinishedAt, t0)
	}
	if err := s.PutOperation(ctx, Operation{ID: "b", Kind: "k", State: StateRunning, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetOperation(ctx, "b"); !got.FinishedAt.IsZero() {
		t.Errorf("an active operation has finished time %v", got.FinishedAt)
	}
}

func TestPutOperationReplacesByID(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	op := Operation{ID: "op", Kind: "image.pull", State: StateQueued, CreatedAt: t0}
	if err := s.PutOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	op.State, op.Phase, op.Done, op.Total, op.Unit = StateSucceeded, "done", 9, 9, UnitItems
	op.UpdatedAt, op.FinishedAt = t0.Add(time.Minute), t0.Add(time.Minute)
	if err := s.PutOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOperation(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	sameOp(t, got, op)
	all, err := s.ListOperations(ctx, ListOptions{})
	if err != nil || len(all) != 1 {
		t.Fatalf("after replace: %d operations (%v), want 1", len(all), err)
	}
}

func TestPutOperationRejectsInvalid(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	good := Operation{ID: "op", Kind: "k", State: StateRunning, CreatedAt: t0}
	if err := s.PutOperation(ctx, good); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		mutate  func(*Operation)
		wantMsg string
	}{
		{"unknown state", func(o *Operation) { o.State = "paused" }, `state "paused"`},
		{"empty state", func(o *Operation) { o.State = "" }, `state ""`},
		{"unknown unit", func(o *Operation) { o.Unit = "kg" }, `unit "kg"`},
		{"empty id", func(o *Operation) { o.ID = "" }, "id is empty"},
		{"empty kind", func(o *Operation) { o.Kind = "" }, "kind is empty"},
		{"negative progress", func(o *Operation) { o.Done = -1 }, "negative"},
		{"no created time", func(o *Operation) { o.CreatedAt = time.Time{} }, "created time"},
		{"finished but active", func(o *Operation) { o.FinishedAt = t0 }, "not terminal"},
		{"year 10000", func(o *Operation) { o.UpdatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside years"},
	}
	for _, c := range cases {
		op := good
		op.Phase = "changed"
		c.mutate(&op)
		err := s.PutOperation(ctx, op)
		if err == nil || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.wantMsg)
		}
	}
	// Nothing was written by the rejected puts.
	got, err := s.GetOperation(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	sameOp(t, got, Operation{ID: "op", Kind: "k", State: StateRunning, CreatedAt: t0, UpdatedAt: t0})
	if all, _ := s.ListOperations(ctx, ListOptions{}); len(all) != 1 {
		t.Errorf("%d operations stored, want 1", len(all))
	}
}

func TestGetOperationNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.GetOperation(context.Background(), "op-missing")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("error %v does not wrap ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "op-missing") {
		t.Errorf("error %q does not name the id", err)
	}
}

func ids(ops []Operation) string {
	var b []string
	for _, o := range ops {
		b = append(b, o.ID)
	}
	return strings.Join(b, ",")
}

func TestListOperations(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if ops, err := s.ListOperations(ctx, ListOptions{}); err != nil || len(ops) != 0 {
		t.Fatalf("empty store: %v, %v", ops, err)
	}
	// Inserted out of order; c and c2 share a creation time (ties break by
	// ID, descending). Times differ by less than a microsecond or span
	// digits, to catch ordering by a non-fixed-width text form.
	put := func(id, state string, created time.Time) {
		t.Helper()
		if err := s.PutOperation(ctx, Operation{ID: id, Kind: "k", State: state, CreatedAt: created}); err != nil {
			t.Fatal(err)
		}
	}
	put("b", StateSucceeded, t0.Add(10*time.Nanosecond))
	put("d", StateQueued, t0.Add(time.Second))
	put("a", StateRunning, t0)
	put("c", StateFailed, t0.Add(100*time.Nanosecond))
	put("c2", StateRunning, t0.Add(100*time.Nanosecond))
	put("e", StateCancelled, t0.Add(time.Hour))
	// Trailing zeros: as RFC 3339 text with trimmed zeros, "…10.1Z" would
	// sort after "…10.12Z".
	whole := t0.Add(2 * time.Hour).Truncate(time.Second)
	put("f", StateSucceeded, whole.Add(100*time.Millisecond))
	put("g", StateSucceeded, whole.Add(120*time.Millisecond))

	for _, c := range []struct {
		opts ListOptions
		want string
	}{
		{ListOptions{}, "g,f,e,d,c2,c,b,a"},
		{ListOptions{Limit: 3}, "g,f,e"},
		{ListOptions{Limit: 100}, "g,f,e,d,c2,c,b,a"},
		{ListOptions{ActiveOnly: true}, "d,c2,a"},
		{ListOptions{ActiveOnly: true, Limit: 2}, "d,c2"},
	} {
		ops, err := s.ListOperations(ctx, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(ops); got != c.want {
			t.Errorf("%+v: got %s, want %s", c.opts, got, c.want)
		}
	}
	if _, err := s.ListOperations(ctx, ListOptions{Limit: -1}); err == nil {
		t.Error("a negative limit was accepted")
	}
}

func TestFailUnfinished(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	done := Operation{ID: "done", Kind: "k", State: StateSucceeded, CreatedAt: t0, FinishedAt: t0}
	for _, op := range []Operation{
		{ID: "q", Kind: "k", State: StateQueued, CreatedAt: t0},
		{ID: "r", Kind: "k", State: StateRunning, Phase: "copy", Done: 5, Total: 10, Unit: UnitBytes, CreatedAt: t0},
		done,
		{ID: "x", Kind: "k", State: StateCancelled, Error: "by user", CreatedAt: t0},
	} {
		if err := s.PutOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(time.Hour + 3)
	n, err := s.FailUnfinished(ctx, "the daemon restarted", now)
	if err != nil || n != 2 {
		t.Fatalf("FailUnfinished = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"q", "r"} {
		op, err := s.GetOperation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if op.State != StateFailed || op.Error != "the daemon restarted" || !op.UpdatedAt.Equal(now) || !op.FinishedAt.Equal(now) {
			t.Errorf("%s after FailUnfinished: %+v", id, op)
		}
	}
	r, _ := s.GetOperation(ctx, "r")
	if r.Done != 5 || r.Phase != "copy" {
		t.Errorf("progress of r was lost: %+v", r)
	}
	got, _ := s.GetOperation(ctx, "done")
	sameOp(t, got, Operation{ID: "done", Kind: "k", State: StateSucceeded, CreatedAt: t0, UpdatedAt: t0, FinishedAt: t0})
	x, _ := s.GetOperation(ctx, "x")
	if x.State != StateCancelled || x.Error != "by user" {
		t.Errorf("a cancelled operation was touched: %+v", x)
	}
	if n, err := s.FailUnfinished(ctx, "again", now); err != nil || n != 0 {
		t.Errorf("second FailUnfinished = %d, %v; want 0", n, err)
	}
	if _, err := s.FailUnfinished(ctx, "", now); err == nil {
		t.Error("an empty reason was accepted")
	}
	if _, err := s.FailUnfinished(ctx, "r", time.Time{}); err == nil {
		t.Error("a zero time was accepted")
	}
}

func TestOperationsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	op := Operation{ID: "keep", Kind: "k", State: StateRunning, Done: 1, CreatedAt: t0}
	if err := s.PutOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetOperation(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	op.UpdatedAt = t0
	sameOp(t, got, op)
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const writers, perWriter = 20, 25
	errs := make(chan error, writers*perWriter*3)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				op := Operation{ID: fmt.Sprintf("w%02d-%02d", w, i), Kind: "k", State: StateRunning,
					Unit: UnitBytes, CreatedAt: t0.Add(time.Duration(w*perWriter+i) * time.Millisecond)}
				if err := s.PutOperation(ctx, op); err != nil {
					errs <- err
					continue
				}
				op.Done, op.State = int64(i), StateSucceeded
				if err := s.PutOperation(ctx, op); err != nil {
					errs <- err
				}
				if _, err := s.ListOperations(ctx, ListOptions{ActiveOnly: true, Limit: 5}); err != nil {
					errs <- err
				}
			}
		})
	}
	// FailUnfinished sweeps run alongside; each op's final put comes after
	// its first, so every op ends succeeded.
	wg.Go(func() {
		for range 10 {
			if _, err := s.FailUnfinished(ctx, "sweep", t0.Add(time.Hour)); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	all, err := s.ListOperations(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*perWriter {
		t.Fatalf("%d operations stored, want %d", len(all), writers*perWriter)
	}
	for _, op := range all {
		if op.State != StateSucceeded {
			t.Errorf("%s left in state %s", op.ID, op.State)
		}
	}
}

// Operation text fields come from users (targets, ids on the command line) and
// from error messages; whatever bytes they hold must come back unchanged.
func FuzzOperationRoundTrip(f *testing.F) {
	f.Add("op-1", "image.pull", "debian", "download", "boom", int64(1), int64(2), int64(0))
	f.Add("ü\x00z", "k\xff", "'; DROP TABLE operations; --", "", "line\nline", int64(0), int64(0), int64(-1))
	f.Add("%_?#", "vm.start", "a b", "\t", "", int64(1<<62), int64(1<<62), int64(1<<60))
	s, err := Open(context.Background(), filepath.Join(f.TempDir(), "banger.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	f.Fuzz(func(t *testing.T, id, kind, target, phase, errText string, done, total, nanos int64) {
		ctx := context.Background()
		op := Operation{ID: id, Kind: kind, Target: target, Phase: phase, Error: errText,
			State: StateFailed, Done: done, Total: total, CreatedAt: time.Unix(0, nanos)}
		err := s.PutOperation(ctx, op)
		if id == "" || kind == "" || done < 0 || total < 0 {
			if err == nil {
				t.Fatalf("invalid operation accepted: %+v", op)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetOperation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		op.UpdatedAt, op.FinishedAt = op.CreatedAt, op.CreatedAt
		sameOp(t, got, op)
	})
}
