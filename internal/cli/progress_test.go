package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/progress"
	"banger/internal/rpc"
	"banger/internal/testutil/ptypair"
)

// step is one update a renderer gets, at a time after the start.
type step struct {
	at time.Duration
	op rpc.Operation
}

// pullSteps is an image pull as bangerd reports it: a phase without a count,
// one counting items with no total, one counting items against a total, one
// counting bytes against a total, and the final state.
func pullSteps() []step {
	base := rpc.Operation{ID: "op-1a2b3c", Kind: "image pull", Target: "debian-bookworm", State: rpc.StateRunning}
	at := func(d time.Duration, phase string, done, total int64, unit progress.Unit) step {
		op := base
		op.Phase, op.Done, op.Total, op.Unit = phase, done, total, unit
		return step{d, op}
	}
	queued := base
	queued.State = rpc.StateQueued
	final := base
	final.State, final.Phase, final.Done, final.Total, final.Unit = rpc.StateSucceeded, "making the ext4 image", 0, 0, progress.None
	return []step{
		{0, queued},
		at(10*time.Millisecond, "debootstrap bookworm from http://mirror.invalid/debian", 0, 0, progress.None),
		at(2*time.Second, "retrieving packages", 0, 0, progress.Items),
		at(3*time.Second, "retrieving packages", 60, 0, progress.Items),
		at(5*time.Second, "retrieving packages", 153, 0, progress.Items),
		at(5*time.Second, "unpacking the base system", 0, 65, progress.Items),
		at(6*time.Second, "unpacking the base system", 53, 65, progress.Items),
		at(7*time.Second, "downloading kernel", 0, 0, progress.Bytes),
		at(7*time.Second, "downloading kernel", 0, 96<<20, progress.Bytes),
		at(10*time.Second, "downloading kernel", 96<<20, 96<<20, progress.Bytes),
		at(10*time.Second, "making the ext4 image", 0, 0, progress.None),
		{11500 * time.Millisecond, final},
	}
}

// Without a terminal, each phase is one line, written when it ends, with
// its count (a total when known, a rate otherwise) and its duration.
func TestLineRendererGolden(t *testing.T) {
	var out bytes.Buffer
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	r := &lineRenderer{w: &out, now: func() time.Time { return now }}
	steps := pullSteps()
	for _, s := range steps[:len(steps)-1] {
		now = t0.Add(s.at)
		r.update(s.op)
	}
	last := steps[len(steps)-1]
	now = t0.Add(last.at)
	r.finish(last.op)

	golden := filepath.Join("testdata", "progress", "lines.golden")
	if os.Getenv("BANGER_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("output:\n%s\nwant (%s):\n%s", out.String(), golden, want)
	}
	if strings.Contains(out.String(), "/-") || strings.Contains(out.String(), "0/0") {
		t.Errorf("a count that means nothing:\n%s", out.String())
	}
}

// On a terminal, the operation has one live bar: redrawn in place for each
// phase, with no count that means nothing, and only the last one left above
// the final state.
func TestBarRendererOnTerminal(t *testing.T) {
	master, slave, err := ptypair.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer master.Close()
	var tty bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(&tty, master) }()

	a := &app{stderr: slave, getenv: func(k string) string {
		if k == "TERM" {
			return "xterm"
		}
		return ""
	}}
	r := newRenderer(a)
	bar, ok := r.(*barRenderer)
	if !ok {
		t.Fatalf("renderer on a terminal is %T, want a bar", r)
	}
	bar.throttle = 0 // draw every update: the steps come all at once here
	steps := pullSteps()
	for _, s := range steps[:len(steps)-1] {
		r.update(s.op)
	}
	r.finish(steps[len(steps)-1].op)
	slave.Close()
	wg.Wait()
	waitNoBarTimers(t)

	got := tty.String()
	for _, want := range []string{"debootstrap bookworm from http://mirr...", "retrieving packages (153 items", "(53/65)", "unpacking the base system", "downloading kernel", "making the ext4 image", "op-1a2b3c: succeeded"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got)
		}
	}
	if strings.Contains(got, "/-") {
		t.Errorf("terminal output shows a count without a total as /-:\n%q", got)
	}
	// One bar line and the state line: phases do not leave a line each.
	if n := strings.Count(got, "\n"); n != 2 {
		t.Errorf("%d lines on the terminal, want 2 (the bar, the state):\n%q", n, got)
	}
	// Redrawn in place for each new phase, and once more when the download's
	// total became known.
	if n := strings.Count(got, "\r\033[K"); n != 5 {
		t.Errorf("the bar was redrawn in place %d times, want 5:\n%q", n, got)
	}
}

// waitNoBarTimers fails when a redraw timer of the bar library outlives the
// renderer's finish: each bar without total starts one, and stop ends it.
func waitNoBarTimers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "schollz/progressbar") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine of the bar library is still running after finish:\n%s", stacks)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRendererWithoutTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &app{stderr: f, getenv: func(string) string { return "" }}
	if _, ok := newRenderer(a).(*lineRenderer); !ok {
		t.Errorf("renderer on a file is %T, want lines", newRenderer(a))
	}
	a.quiet = true
	if _, ok := newRenderer(a).(nopRenderer); !ok {
		t.Errorf("renderer with --quiet is %T, want none", newRenderer(a))
	}
}

func TestPhaseSummary(t *testing.T) {
	for _, c := range []struct {
		op   rpc.Operation
		took time.Duration
		want string
	}{
		{rpc.Operation{}, 300 * time.Millisecond, "<1s"},
		{rpc.Operation{Done: 5, Total: 9, Unit: progress.Items}, 2 * time.Second, "5/9 items, 2s"},
		{rpc.Operation{Done: 20, Unit: progress.Items}, 4 * time.Second, "20 items, 5/s, 4s"},
		{rpc.Operation{Done: 3 << 20, Unit: progress.Bytes}, 3 * time.Second, "3.0 MiB, 1.0 MiB/s, 3s"},
		{rpc.Operation{Done: 1 << 30, Total: 2 << 30, Unit: progress.Bytes}, time.Minute, "1.0 GiB/2.0 GiB, 1m0s"},
		{rpc.Operation{Unit: progress.Items}, time.Second, "1s"}, // a unit but nothing counted yet
	} {
		if got := phaseSummary(c.op, c.took); got != c.want {
			t.Errorf("phaseSummary(%+v, %s) = %q, want %q", c.op, c.took, got, c.want)
		}
	}
}
