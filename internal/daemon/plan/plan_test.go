package plan

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// recorder builds steps that log their Do and Undo; the step named fail
// fails.
func recorder(log *[]string, fail string, names ...string) []Step {
	var steps []Step
	for _, n := range names {
		steps = append(steps, Step{
			Name: n,
			Do: func(context.Context) error {
				*log = append(*log, "do "+n)
				if n == fail {
					return errors.New("boom")
				}
				return nil
			},
			Undo: func(ctx context.Context) {
				if ctx.Err() != nil {
					*log = append(*log, "undo with a done context")
				}
				*log = append(*log, "undo "+n)
			},
		})
	}
	return steps
}

func TestRunAllSteps(t *testing.T) {
	var log, seen []string
	if err := Run(context.Background(), recorder(&log, "", "a", "b", "c"), func(s string) { seen = append(seen, s) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"do a", "do b", "do c"}; !reflect.DeepEqual(log, want) {
		t.Errorf("ran %q, want %q", log, want)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(seen, want) {
		t.Errorf("observed %q, want %q", seen, want)
	}
}

func TestFailureUndoesInReverseWithTheFailingStep(t *testing.T) {
	var log []string
	err := Run(context.Background(), recorder(&log, "b", "a", "b", "c"), nil)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "b" || !strings.Contains(err.Error(), "b: boom") {
		t.Fatalf("error %v, want a StepError at b", err)
	}
	if want := []string{"do a", "do b", "undo b", "undo a"}; !reflect.DeepEqual(log, want) {
		t.Errorf("ran %q, want %q", log, want)
	}
}

func TestCancelBetweenStepsUndoesWithALiveContext(t *testing.T) {
	var log []string
	ctx, cancel := context.WithCancel(context.Background())
	steps := recorder(&log, "", "a", "b", "c")
	do := steps[1].Do
	steps[1].Do = func(c context.Context) error { cancel(); return do(c) }
	err := Run(ctx, steps, nil)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "before c") {
		t.Fatalf("error %v, want cancelled before c", err)
	}
	if want := []string{"do a", "do b", "undo b", "undo a"}; !reflect.DeepEqual(log, want) {
		t.Errorf("ran %q, want %q", log, want)
	}
}

func TestUndoSkipsNilAndNames(t *testing.T) {
	var log []string
	steps := recorder(&log, "", "a", "b")
	steps = append(steps, Step{Name: "c", Do: func(context.Context) error { return nil }})
	Undo(context.Background(), steps)
	if want := []string{"undo b", "undo a"}; !reflect.DeepEqual(log, want) {
		t.Errorf("undid %q, want %q", log, want)
	}
	if got := Names(steps); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Names = %q", got)
	}
}
