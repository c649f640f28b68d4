package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"banger/internal/progress"
)

// Operation states. Queued and running are active; the rest are terminal.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Unit is the unit of an operation's progress counters (progress.Unit).
// Only its constants are valid: PutOperation refuses any other, so code that
// reports progress must use them (opstate checks them before they reach the
// store).
type Unit = progress.Unit

// Progress units of an operation.
const (
	UnitNone  = progress.None
	UnitBytes = progress.Bytes
	UnitItems = progress.Items
)

// Operation is a long-running daemon job (a pull, an import, a VM start, ...)
// as persisted, so that a CLI that disconnects can re-attach to it.
type Operation struct {
	ID, Kind, Target, Phase string
	State                   string // one of the State* constants
	Done, Total             int64  // progress; Total 0 means unknown
	Unit                    Unit   // one of the Unit* constants
	Error                   string
	// CreatedAt must be set. UpdatedAt defaults to CreatedAt. FinishedAt is
	// zero until the operation is terminal; for a terminal operation it
	// defaults to UpdatedAt. All are returned in UTC.
	CreatedAt, UpdatedAt, FinishedAt time.Time
}

// ListOptions selects operations for ListOperations.
type ListOptions struct {
	Limit      int  // at most this many; 0 means no limit
	ActiveOnly bool // only queued or running operations
}

// Active reports whether state is queued or running.
func Active(state string) bool { return state == StateQueued || state == StateRunning }

// Terminal reports whether state is succeeded, failed or cancelled.
func Terminal(state string) bool {
	return state == StateSucceeded || state == StateFailed || state == StateCancelled
}

// timeLayout is fixed-width UTC, so stored timestamps sort as they compare
// and round-trip to the nanosecond.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }

// checkTime rejects times the fixed-width layout cannot hold.
func checkTime(field string, t time.Time) error {
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%s %v is outside years 1 to 9999", field, t)
	}
	return nil
}

// normalize validates op and fills the documented defaults.
func (op Operation) normalize() (Operation, error) {
	var problems []string
	if op.ID == "" {
		problems = append(problems, "id is empty")
	}
	if op.Kind == "" {
		problems = append(problems, "kind is empty")
	}
	if !Active(op.State) && !Terminal(op.State) {
		problems = append(problems, fmt.Sprintf("state %q is not one of queued, running, succeeded, failed, cancelled", op.State))
	}
	if !op.Unit.Valid() {
		problems = append(problems, fmt.Sprintf("unit %q is not one of bytes, items or empty", op.Unit))
	}
	if op.Done < 0 || op.Total < 0 {
		problems = append(problems, fmt.Sprintf("progress %d/%d is negative", op.Done, op.Total))
	}
	if op.CreatedAt.IsZero() {
		problems = append(problems, "created time is not set")
	}
	if op.UpdatedAt.IsZero() {
		op.UpdatedAt = op.CreatedAt
	}
	if Terminal(op.State) && op.FinishedAt.IsZero() {
		op.FinishedAt = op.UpdatedAt
	}
	if Active(op.State) && !op.FinishedAt.IsZero() {
		problems = append(problems, fmt.Sprintf("finished time is set but state %q is not terminal", op.State))
	}
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"created time", op.CreatedAt}, {"updated time", op.UpdatedAt}, {"finished time", op.FinishedAt}} {
		if f.t.IsZero() {
			continue
		}
		if err := checkTime(f.name, f.t); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return op, fmt.Errorf("invalid operation %q: %s", op.ID, strings.Join(problems, "; "))
	}
	return op, nil
}

// PutOperation inserts op, or replaces the operation with the same ID. An
// invalid operation is rejected and nothing is written.
func (s *Store) PutOperation(ctx context.Context, op Operation) error {
	op, err := op.normalize()
	if err != nil {
		return err
	}
	var finished sql.NullString
	if !op.FinishedAt.IsZero() {
		finished = sql.NullString{String: formatTime(op.FinishedAt), Valid: true}
	}
	_, err = s.db.ExecContext(ctx, `
		INSERT INTO operations
			(id, kind, target, phase, state, done, total, unit, error, created_at, updated_at, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			kind = excluded.kind, target = excluded.target, phase = excluded.phase,
			state = excluded.state, done = excluded.done, total = excluded.total,
			unit = excluded.unit, error = excluded.error, created_at = excluded.created_at,
			updated_at = excluded.updated_at, finished_at = excluded.finished_at`,
		op.ID, op.Kind, op.Target, op.Phase, op.State, op.Done, op.Total, op.Unit, op.Error,
		formatTime(op.CreatedAt), formatTime(op.UpdatedAt), finished)
	if err != nil {
		return fmt.Errorf("store %s: save operation %q: %w", s.path, op.ID, err)
	}
	return nil
}

const operationColumns = `id, kind, target, phase, state, done, total, unit, error, created_at, updated_at, finished_at`

type rowScanner interface{ Scan(dest ...any) error }

func scanOperation(r rowScanner) (Operation, error) {
	var (
		op               Operation
		created, updated string
		finished         sql.NullString
	)
	if err := r.Scan(&op.ID, &op.Kind, &op.Target, &op.Phase, &op.State, &op.Done, &op.Total,
		&op.Unit, &op.Error, &created, &updated, &finished); err != nil {
		return Operation{}, err
	}
	var err error
	if op.CreatedAt, err = parseTime(created); err != nil {
		return Operation{}, fmt.Errorf("operation %q: created_at: %w", op.ID, err)
	}
	if op.UpdatedAt, err = parseTime(updated); err != nil {
		return Operation{}, fmt.Errorf("operation %q: updated_at: %w", op.ID, err)
	}
	if finished.Valid {
		if op.FinishedAt, err = parseTime(finished.String); err != nil {
			return Operation{}, fmt.Errorf("operation %q: finished_at: %w", op.ID, err)
		}
	}
	return op, nil
}

// GetOperation returns the operation with the given ID, or an error wrapping
// ErrNotFound.
func (s *Store) GetOperation(ctx context.Context, id string) (Operation, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+operationColumns+` FROM operations WHERE id = ?`, id)
	op, err := scanOperation(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Operation{}, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("store %s: read operation %q: %w", s.path, id, err)
	}
	return op, nil
}

// ListOperations returns operations newest first (by creation time, then ID).
func (s *Store) ListOperations(ctx context.Context, o ListOptions) ([]Operation, error) {
	if o.Limit < 0 {
		return nil, fmt.Errorf("list operations: limit %d is negative (use 0 for no limit)", o.Limit)
	}
	q := `SELECT ` + operationColumns + ` FROM operations`
	if o.ActiveOnly {
		q += ` WHERE state IN ('queued', 'running')`
	}
	q += ` ORDER BY created_at DESC, id DESC`
	var args []any
	if o.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, o.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store %s: list operations: %w", s.path, err)
	}
	defer rows.Close()
	var ops []Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("store %s: list operations: %w", s.path, err)
		}
		ops = append(ops, op)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %s: list operations: %w", s.path, err)
	}
	return ops, nil
}

// FailUnfinished marks every queued or running operation failed with the
// given reason, updated and finished at now, and returns how many it marked.
// The daemon calls it at start-up: whatever was in flight died with the
// previous daemon.
func (s *Store) FailUnfinished(ctx context.Context, reason string, now time.Time) (int, error) {
	if reason == "" {
		return 0, errors.New("fail unfinished operations: the reason is empty")
	}
	if now.IsZero() {
		return 0, errors.New("fail unfinished operations: the time is not set")
	}
	if err := checkTime("time", now); err != nil {
		return 0, fmt.Errorf("fail unfinished operations: %w", err)
	}
	ts := formatTime(now)
	res, err := s.db.ExecContext(ctx, `
		UPDATE operations SET state = 'failed', error = ?, updated_at = ?, finished_at = ?
		WHERE state IN ('queued', 'running')`, reason, ts, ts)
	if err != nil {
		return 0, fmt.Errorf("store %s: fail unfinished operations: %w", s.path, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store %s: fail unfinished operations: %w", s.path, err)
	}
	return int(n), nil
}
