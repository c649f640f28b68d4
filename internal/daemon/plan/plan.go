package plan

import "context"

// Step is one named action and what takes it back.
type Step struct {
	Name string
	// Do performs the step.
	Do func(ctx context.Context) error
	// Undo takes back what Do did, as far as it got: it runs after Do
	// failed too, so it must cope with a half-done step, and with one
	// already undone. Nil when there is nothing to take back. Its context
	// is never cancelled by the caller's.
	Undo func(ctx context.Context)
}

// StepError is the error of a run that stopped at a step.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }

func (e *StepError) Unwrap() error { return e.Err }

// Observer, when not nil, hears of each step before it starts.
type Observer func(step string)

// Run does steps in order. When one fails, or ctx ends between two, the
// steps begun are undone in reverse (the failing one first) and the error
// is a *StepError naming the step.
func Run(ctx context.Context, steps []Step, seen Observer) error {
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			Undo(ctx, steps[:i])
			return &StepError{Step: "before " + s.Name, Err: err}
		}
		if seen != nil {
			seen(s.Name)
		}
		if err := s.Do(ctx); err != nil {
			Undo(ctx, steps[:i+1])
			return &StepError{Step: s.Name, Err: err}
		}
	}
	return nil
}

// Undo runs the undos of steps in reverse, with a context that ctx's end
// does not cancel.
func Undo(ctx context.Context, steps []Step) {
	uctx := context.WithoutCancel(ctx)
	for i := len(steps) - 1; i >= 0; i-- {
		if u := steps[i].Undo; u != nil {
			u(uctx)
		}
	}
}

// Names lists the steps' names, for documentation and tests.
func Names(steps []Step) []string {
	ns := make([]string, len(steps))
	for i, s := range steps {
		ns[i] = s.Name
	}
	return ns
}
