package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"banger/internal/rpc"
)

// renderer shows an operation's progress: a bar on a terminal, plain lines
// otherwise, nothing with --quiet.
type renderer interface {
	update(op rpc.Operation)
	finish(op rpc.Operation)
}

func newRenderer(a *app) renderer {
	if a.quiet {
		return nopRenderer{}
	}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && a.getenv("TERM") != "dumb" {
		return &barRenderer{w: a.stderr, color: a.getenv("NO_COLOR") == ""}
	}
	return &lineRenderer{w: a.stderr}
}

type nopRenderer struct{}

func (nopRenderer) update(rpc.Operation) {}
func (nopRenderer) finish(rpc.Operation) {}

// lineRenderer prints a line when the phase changes, when progress moves by a
// tenth, and at most every few seconds otherwise, so logs stay readable.
type lineRenderer struct {
	w         io.Writer
	phase     string
	lastTenth int64
	lastAt    time.Time
	started   bool
}

const lineEvery = 5 * time.Second

func (r *lineRenderer) header(op rpc.Operation) {
	if !r.started && op.ID != "" {
		r.started = true
		fmt.Fprintf(r.w, "%s: %s %s\n", op.ID, op.Kind, op.Target)
	}
}

func (r *lineRenderer) update(op rpc.Operation) {
	r.header(op)
	if op.Terminal() {
		return
	}
	tenth := int64(-1)
	if op.Total > 0 {
		tenth = op.Done * 10 / op.Total
	}
	now := time.Now()
	if op.Phase == r.phase && tenth == r.lastTenth && now.Sub(r.lastAt) < lineEvery {
		return
	}
	if op.Phase == "" && op.Done == 0 {
		return
	}
	r.phase, r.lastTenth, r.lastAt = op.Phase, tenth, now
	if pt := progressText(op); pt != "-" {
		fmt.Fprintf(r.w, "%s: %s %s\n", op.ID, orDash(op.Phase), pt)
	} else {
		fmt.Fprintf(r.w, "%s: %s\n", op.ID, orDash(op.Phase))
	}
}

func (r *lineRenderer) finish(op rpc.Operation) {
	if op.ID == "" {
		return
	}
	r.header(op)
	fmt.Fprintf(r.w, "%s: %s\n", op.ID, op.State)
}

// barRenderer draws one progress bar per phase.
type barRenderer struct {
	w     io.Writer
	color bool
	phase string
	bar   *progressbar.ProgressBar
}

func (r *barRenderer) update(op rpc.Operation) {
	if op.Terminal() {
		return
	}
	if r.bar == nil || op.Phase != r.phase || (op.Total > 0 && r.bar.GetMax64() != op.Total) {
		if r.bar != nil {
			_ = r.bar.Finish()
			fmt.Fprintln(r.w)
		}
		r.phase = op.Phase
		total := op.Total
		if total <= 0 {
			total = -1
		}
		desc := op.Phase
		if desc == "" {
			desc = op.Kind + " " + op.Target
		}
		r.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(r.w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowBytes(op.Unit == "bytes"),
			progressbar.OptionShowCount(),
			progressbar.OptionEnableColorCodes(r.color),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSpinnerType(14),
		)
	}
	_ = r.bar.Set64(op.Done)
}

func (r *barRenderer) finish(op rpc.Operation) {
	if r.bar != nil {
		if op.State == rpc.StateSucceeded {
			_ = r.bar.Finish()
		}
		fmt.Fprintln(r.w)
	}
	if op.ID != "" {
		fmt.Fprintf(r.w, "%s: %s\n", op.ID, op.State)
	}
}
