package opstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"banger/internal/store"
)

// Operation is the record an operation is persisted and reported as.
type Operation = store.Operation

// Unit is the unit of an operation's progress; only the constants are valid.
type Unit = store.Unit

// Progress units.
const (
	UnitNone  = store.UnitNone
	UnitBytes = store.UnitBytes
	UnitItems = store.UnitItems
)

// Operation states.
const (
	Queued    = "queued"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// Terminal reports whether state is a final state.
func Terminal(state string) bool {
	return state == Succeeded || state == Failed || state == Cancelled
}

// Persister is where operations are kept. *store.Store satisfies it.
type Persister interface {
	PutOperation(ctx context.Context, op store.Operation) error
	GetOperation(ctx context.Context, id string) (store.Operation, error)
	ListOperations(ctx context.Context, o store.ListOptions) ([]store.Operation, error)
	FailUnfinished(ctx context.Context, reason string, now time.Time) (int, error)
}

// Func is the work of one operation. It reports through p and must return
// promptly once ctx is cancelled.
type Func func(ctx context.Context, p *Progress) error

// ErrNotFound is returned for an unknown operation id.
var ErrNotFound = errors.New("operation not found")

// CrashReason is the error recorded on operations found unfinished at start.
const CrashReason = "bangerd stopped while this operation was running; start it again"

// ShutdownReason is the error recorded on operations cancelled by a daemon shutdown.
const ShutdownReason = "cancelled because bangerd shut down; start it again"

// persistEvery bounds how often progress is written to the store; phase and
// state changes are always written at once.
const persistEvery = 500 * time.Millisecond

// finalWriteTimeout bounds each attempt to write an operation's terminal
// state, and finalWriteAttempts how many are made. The write never uses the
// operation's own context, which is cancelled by then when it was cancelled.
const (
	finalWriteTimeout  = 10 * time.Second
	finalWriteAttempts = 3
)

// Manager owns every running operation of one daemon.
type Manager struct {
	p   Persister
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	running map[string]*run
	// unsaved holds finished operations whose terminal state the store
	// refused, so that Get, List and Watch still report how they ended.
	unsaved map[string]Operation
	closed  bool
	wg      sync.WaitGroup
}

type run struct {
	mu        sync.Mutex
	op        Operation
	cancel    context.CancelCauseFunc
	lastSaved time.Time
	persistMu sync.Mutex // orders writes of this run's snapshots
	persisted time.Time  // UpdatedAt of the newest snapshot written
	watchers  map[chan Operation]struct{}
	done      chan struct{}
}

// New returns a manager persisting through p.
func New(p Persister, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{p: p, log: log, now: time.Now, running: map[string]*run{}, unsaved: map[string]Operation{}}
}

// Recover marks every operation that a previous daemon left queued or running
// as failed. Call it once at start, before Start.
func (m *Manager) Recover(ctx context.Context) (int, error) {
	n, err := m.p.FailUnfinished(ctx, CrashReason, m.now())
	if err != nil {
		return 0, fmt.Errorf("mark interrupted operations failed: %w", err)
	}
	if n > 0 {
		m.log.Warn("operations interrupted by a previous daemon marked failed", "count", n)
	}
	return n, nil
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "op-" + hex.EncodeToString(b[:])
}

// Start records a new operation and runs fn for it in the background. The
// operation outlives ctx: only Cancel or Shutdown stop it.
func (m *Manager) Start(ctx context.Context, kind, target string, fn Func) (Operation, error) {
	now := m.now().UTC()
	op := Operation{ID: newID(), Kind: kind, Target: target, State: Queued, CreatedAt: now, UpdatedAt: now}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Operation{}, errors.New("bangerd is shutting down; try again once it is back")
	}
	if err := m.p.PutOperation(ctx, op); err != nil {
		m.mu.Unlock()
		return Operation{}, fmt.Errorf("record operation %s %s: %w", kind, target, err)
	}
	runCtx, cancel := context.WithCancelCause(context.Background())
	r := &run{op: op, cancel: cancel, watchers: map[chan Operation]struct{}{}, done: make(chan struct{}), lastSaved: now}
	m.running[op.ID] = r
	m.wg.Add(1)
	m.mu.Unlock()

	go m.execute(runCtx, r, fn)
	return op, nil
}

func (m *Manager) execute(ctx context.Context, r *run, fn Func) {
	defer m.wg.Done()
	p := &Progress{m: m, r: r}
	p.update(func(op *Operation) { op.State = Running }, true)
	err := func() (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("internal error: %v", v)
				m.log.Error("operation panicked", "id", r.op.ID, "panic", v)
			}
		}()
		return fn(ctx, p)
	}()
	final := p.finish(func(op *Operation) {
		switch {
		case err == nil:
			op.State = Succeeded
			if op.Total > 0 && op.Done < op.Total {
				op.Done = op.Total
			}
		case ctx.Err() != nil:
			op.State = Cancelled
			op.Error = context.Cause(ctx).Error()
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.Cause(ctx)) {
				// Say what the work was doing when it stopped.
				op.Error += ": " + err.Error()
			}
		default:
			op.State = Failed
			op.Error = err.Error()
		}
		op.FinishedAt = m.now().UTC()
	})
	r.cancel(nil)
	saveErr := m.saveFinal(final)

	m.mu.Lock()
	delete(m.running, r.op.ID)
	if saveErr != nil {
		m.unsaved[final.ID] = final
	}
	m.mu.Unlock()
	r.mu.Lock()
	for ch := range r.watchers {
		close(ch)
	}
	r.watchers = nil
	r.mu.Unlock()
	close(r.done)
	m.log.Info("operation finished", "id", final.ID, "kind", final.Kind, "target", final.Target, "state", final.State, "error", final.Error)
}

// Get returns the current state of an operation, live if it is running.
func (m *Manager) Get(ctx context.Context, id string) (Operation, error) {
	m.mu.Lock()
	r := m.running[id]
	m.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.op, nil
	}
	m.mu.Lock()
	op, ok := m.unsaved[id]
	m.mu.Unlock()
	if ok {
		return op, nil
	}
	op, err := m.p.GetOperation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Operation{}, fmt.Errorf("%w: %s (list them with `banger op ls`)", ErrNotFound, id)
	}
	return op, err
}

// List returns operations, newest first, with live progress for running ones.
func (m *Manager) List(ctx context.Context, o store.ListOptions) ([]Operation, error) {
	ops, err := m.p.ListOperations(ctx, o)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range ops {
		if r := m.running[ops[i].ID]; r != nil {
			r.mu.Lock()
			ops[i] = r.op
			r.mu.Unlock()
		} else if op, ok := m.unsaved[ops[i].ID]; ok {
			ops[i] = op
		}
	}
	return ops, nil
}

// Cancel asks a running operation to stop. It returns once the request is
// made; Watch or Wait tell when the operation has stopped. Cancelling a
// finished operation returns it unchanged.
func (m *Manager) Cancel(ctx context.Context, id string) (Operation, error) {
	m.mu.Lock()
	r := m.running[id]
	m.mu.Unlock()
	if r == nil {
		return m.Get(ctx, id)
	}
	r.cancel(errors.New("cancelled by request"))
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.op, nil
}

// Watch returns the operation now and a channel of its later states. The
// channel is closed after the terminal state has been sent or when ctx ends.
// Updates may be coalesced; the terminal state is never dropped.
func (m *Manager) Watch(ctx context.Context, id string) (Operation, <-chan Operation, error) {
	m.mu.Lock()
	r := m.running[id]
	m.mu.Unlock()
	if r == nil {
		op, err := m.Get(ctx, id)
		if err != nil {
			return Operation{}, nil, err
		}
		ch := make(chan Operation)
		close(ch)
		return op, ch, nil
	}
	r.mu.Lock()
	if r.watchers == nil { // finished between the two locks
		r.mu.Unlock()
		op, err := m.Get(ctx, id)
		ch := make(chan Operation)
		close(ch)
		return op, ch, err
	}
	inner := make(chan Operation, 1)
	r.watchers[inner] = struct{}{}
	cur := r.op
	r.mu.Unlock()

	out := make(chan Operation)
	go func() {
		defer close(out)
		defer func() {
			r.mu.Lock()
			if r.watchers != nil {
				delete(r.watchers, inner)
			}
			r.mu.Unlock()
		}()
		for {
			select {
			case op, ok := <-inner:
				if !ok {
					// The run is over: send the final record.
					final, err := m.Get(context.WithoutCancel(ctx), id)
					if err == nil {
						select {
						case out <- final:
						case <-ctx.Done():
						}
					}
					return
				}
				select {
				case out <- op:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return cur, out, nil
}

// Wait blocks until the operation is terminal or ctx ends.
func (m *Manager) Wait(ctx context.Context, id string) (Operation, error) {
	op, ch, err := m.Watch(ctx, id)
	if err != nil {
		return Operation{}, err
	}
	for next := range ch {
		op = next
	}
	if !Terminal(op.State) {
		return op, ctx.Err()
	}
	return op, nil
}

// Shutdown cancels every running operation, records it as cancelled by the
// shutdown, and waits for them to return or ctx to end. Start fails afterwards.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	for _, r := range m.running {
		r.cancel(errors.New(ShutdownReason))
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("operations still running at shutdown deadline: %w", ctx.Err())
	}
	// Try once more to record how operations the store refused ended.
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for id, op := range m.unsaved {
		if err := m.p.PutOperation(ctx, op); err != nil {
			errs = append(errs, fmt.Errorf("record the end of operation %s: %w", id, err))
			continue
		}
		delete(m.unsaved, id)
	}
	return errors.Join(errs...)
}

// saveFinal writes an operation's terminal state, retrying a few times with
// a fresh bounded context each: a cancelled operation's own context is done,
// and a store that was briefly busy must not leave the operation recorded
// as running. The snapshot is made valid first, so that no bad progress
// value can keep the terminal state out of the store.
func (m *Manager) saveFinal(op Operation) error {
	op = sanitize(op)
	var err error
	for attempt := 0; attempt < finalWriteAttempts; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), finalWriteTimeout)
		err = m.p.PutOperation(ctx, op)
		cancel()
		if err == nil {
			return nil
		}
	}
	m.log.Error("record the end of an operation; it is kept in memory until shutdown, and the next start marks it failed",
		"id", op.ID, "state", op.State, "error", err)
	return err
}

// sanitize makes op's progress fields valid for the store.
func sanitize(op Operation) Operation {
	if !op.Unit.Valid() {
		op.Unit = UnitNone
	}
	op.Done, op.Total = max(op.Done, 0), max(op.Total, 0)
	return op
}

// Progress is how an operation reports what it is doing.
type Progress struct {
	m *Manager
	r *run
}

// Snapshot returns the operation as it is now.
func (p *Progress) Snapshot() Operation {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	return p.r.op
}

// ID is the operation's id.
func (p *Progress) ID() string { return p.r.op.ID }

// Phase names the step now under way and resets the counters.
func (p *Progress) Phase(name string) {
	p.update(func(op *Operation) { op.Phase = name; op.Done, op.Total, op.Unit = 0, 0, "" }, true)
}

// SetTotal sets the expected amount of work in unit (UnitBytes or
// UnitItems); 0 means unknown. A unit outside that set is a bug of the
// caller: it is logged and the progress is recorded without a unit, so that
// it can never make the store refuse the operation.
func (p *Progress) SetTotal(total int64, unit Unit) {
	if !unit.Valid() {
		p.m.log.Error("operation progress in an unknown unit; recorded without one", "id", p.ID(), "unit", string(unit))
		unit = UnitNone
	}
	p.update(func(op *Operation) { op.Total, op.Unit = max(total, 0), unit }, false)
}

// Add records n more units done.
func (p *Progress) Add(n int64) { p.update(func(op *Operation) { op.Done = max(op.Done+n, 0) }, false) }

// Set records the units done so far.
func (p *Progress) Set(done int64) { p.update(func(op *Operation) { op.Done = max(done, 0) }, false) }

// Write lets a Progress count bytes passing through an io.Writer chain.
func (p *Progress) Write(b []byte) (int, error) { p.Add(int64(len(b))); return len(b), nil }

// finish applies the terminal change, tells the watchers and returns the
// final record; the caller writes it (saveFinal). Progress reported after
// this, by work that outlived its Func, changes nothing.
func (p *Progress) finish(f func(*Operation)) Operation {
	r := p.r
	r.persistMu.Lock() // let a progress write under way land first
	defer r.persistMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.op)
	r.op.UpdatedAt = p.m.now().UTC()
	r.persisted = r.op.UpdatedAt
	for ch := range r.watchers {
		select {
		case <-ch:
		default:
		}
		ch <- r.op
	}
	return r.op
}

func (p *Progress) update(f func(*Operation), important bool) {
	r := p.r
	now := p.m.now().UTC()
	r.mu.Lock()
	if Terminal(r.op.State) {
		r.mu.Unlock()
		return
	}
	f(&r.op)
	r.op.UpdatedAt = now
	snap := r.op
	save := important || now.Sub(r.lastSaved) >= persistEvery
	if save {
		r.lastSaved = now
	}
	for ch := range r.watchers {
		select { // coalesce: replace an unread update with the newer one
		case <-ch:
		default:
		}
		ch <- snap
	}
	r.mu.Unlock()
	if save {
		r.persistMu.Lock()
		defer r.persistMu.Unlock()
		if snap.UpdatedAt.Before(r.persisted) || r.finished() {
			return // a newer snapshot, or the final one, is already written
		}
		r.persisted = snap.UpdatedAt
		// A failed progress write is only logged: the terminal state is
		// written on its own (saveFinal), whatever happened here.
		ctx, cancel := context.WithTimeout(context.Background(), finalWriteTimeout)
		defer cancel()
		if err := p.m.p.PutOperation(ctx, snap); err != nil {
			p.m.log.Error("persist operation progress", "id", snap.ID, "error", err)
		}
	}
}

func (r *run) finished() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Terminal(r.op.State)
}
