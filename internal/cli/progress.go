package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"banger/internal/progress"
	"banger/internal/rpc"
)

// renderer shows an operation's progress: one live bar on a terminal, one
// plain line per phase otherwise, nothing with --quiet.
type renderer interface {
	update(op rpc.Operation)
	finish(op rpc.Operation)
}

func newRenderer(a *app) renderer {
	if a.quiet {
		return nopRenderer{}
	}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && a.getenv("TERM") != "dumb" {
		desc := maxDesc
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			desc = min(desc, cols-barStats)
		}
		// A line that wraps is not redrawn in place: on a terminal too
		// narrow for a bar, each redraw would leave a line behind.
		if desc >= minDesc {
			return &barRenderer{w: a.stderr, color: a.getenv("NO_COLOR") == "", now: time.Now, throttle: 100 * time.Millisecond, maxDesc: desc}
		}
	}
	return &lineRenderer{w: a.stderr, now: time.Now}
}

type nopRenderer struct{}

func (nopRenderer) update(rpc.Operation) {}
func (nopRenderer) finish(rpc.Operation) {}

// lineRenderer prints, for logs and pipes, a header line, then one line per
// phase once the phase is over, saying what it counted and how long it took,
// then the final state:
//
//	op-1a2b: image pull debian-bookworm
//	op-1a2b: retrieving packages (153 items, 51/s, 3s)
//	op-1a2b: unpacking the base system (53/65 items, 2s)
//	op-1a2b: making the ext4 image (1s)
//	op-1a2b: succeeded
type lineRenderer struct {
	w       io.Writer
	now     func() time.Time
	started bool
	phase   string        // the phase under way; "" before the first
	since   time.Time     // when it was first seen
	last    rpc.Operation // its latest state
}

func (r *lineRenderer) header(op rpc.Operation) {
	if !r.started && op.ID != "" {
		r.started = true
		fmt.Fprintf(r.w, "%s: %s %s\n", printable(op.ID), printable(op.Kind), printable(op.Target))
	}
}

func (r *lineRenderer) update(op rpc.Operation) {
	op = counted(op)
	r.header(op)
	if op.Terminal() || op.Phase == "" {
		return
	}
	if op.Phase != r.phase {
		r.flush()
		r.phase, r.since = op.Phase, r.now()
	}
	r.last = op
}

// flush prints the line of the phase under way, if any.
func (r *lineRenderer) flush() {
	if r.phase == "" {
		return
	}
	fmt.Fprintf(r.w, "%s: %s (%s)\n", printable(r.last.ID), printable(r.phase), phaseSummary(r.last, r.now().Sub(r.since)))
	r.phase = ""
}

func (r *lineRenderer) finish(op rpc.Operation) {
	op = counted(op)
	if op.ID == "" {
		return
	}
	r.header(op)
	if op.Phase != "" && op.Phase == r.phase {
		r.last = op // the final count of the last phase
	}
	r.flush()
	fmt.Fprintf(r.w, "%s: %s\n", printable(op.ID), printable(op.State))
}

// counted is op as the renderers show it: a count past its total (a
// server that sent more than its Content-Length, a tool that did more than
// it listed) makes that total wrong, so it is dropped rather than shown as
// "70/65" or "107%"; a negative count or total is no count.
func counted(op rpc.Operation) rpc.Operation {
	op.Done, op.Total = max(op.Done, 0), max(op.Total, 0)
	if op.Total > 0 && op.Done > op.Total {
		op.Total = 0
	}
	return op
}

// phaseSummary says what a phase counted and how long it took. A count has
// its total when one is known, and a rate otherwise; a phase without a unit
// has no count at all.
func phaseSummary(op rpc.Operation, took time.Duration) string {
	return strings.Join(append(countParts(op, took), roundDuration(took)), ", ")
}

// countParts is what a phase counted after took: the count, with its total
// when known and its rate otherwise; nothing for a phase without a unit.
func countParts(op rpc.Operation, took time.Duration) []string {
	if op.Unit == progress.None || (op.Done <= 0 && op.Total <= 0) {
		return nil
	}
	parts := []string{countText(op)}
	if op.Total <= 0 && took >= time.Second {
		parts = append(parts, rateText(op.Done, op.Unit, took))
	}
	return parts
}

// countText is "5/9 items", "1.2 GiB/3.0 GiB" or, with no total, "5 items".
func countText(op rpc.Operation) string {
	switch {
	case op.Total > 0 && op.Unit == progress.Bytes:
		return amount(op.Done, op.Unit) + "/" + amount(op.Total, op.Unit)
	case op.Total > 0:
		return fmt.Sprintf("%d/%d %s", op.Done, op.Total, op.Unit)
	case op.Unit == progress.Bytes:
		return amount(op.Done, op.Unit)
	}
	return fmt.Sprintf("%d %s", op.Done, op.Unit)
}

func rateText(done int64, unit progress.Unit, took time.Duration) string {
	per := float64(done) / took.Seconds()
	if unit == progress.Bytes {
		return amount(int64(per), unit) + "/s"
	}
	return fmt.Sprintf("%.0f/s", per)
}

func roundDuration(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	return d.Round(time.Second).String()
}

// progressText is the progress column of `op ls` and `op show`: "5/5 (100%)",
// "1.2 GiB" with no total, "-" with no count.
func progressText(op rpc.Operation) string {
	op = counted(op)
	switch {
	case op.Total > 0:
		return fmt.Sprintf("%s/%s (%d%%)", amount(op.Done, op.Unit), amount(op.Total, op.Unit), op.Done*100/op.Total)
	case op.Done > 0:
		return amount(op.Done, op.Unit)
	}
	return "-"
}

// barRenderer draws one live bar per operation: the bar is redrawn in place
// for each phase, and only the last phase's bar stays on the screen, above
// the final state. A count shows its total when one is known; without one,
// the phase shows what it counted and its rate; a phase without a unit shows
// a spinner and the time it has run.
type barRenderer struct {
	w     io.Writer
	color bool
	now   func() time.Time
	// throttle is the least time between two redraws (except the last).
	throttle time.Duration
	// maxDesc bounds the phase shown (0: the constant maxDesc).
	maxDesc int

	phase string
	unit  progress.Unit
	known bool      // the bar has a total
	since time.Time // when the phase was first seen
	bar   *progressbar.ProgressBar
}

// maxDesc bounds the phase shown beside the bar, so that the bar stays on
// one line of an 80-column terminal; a narrower terminal gets its width
// less barStats, and one that leaves less than minDesc gets plain lines.
const (
	maxDesc  = 40
	barStats = 36 // "100% |...| (96/96 MiB, 4.6 TiB/s)" with the bar shrunk to nothing
	minDesc  = 16
)

func (r *barRenderer) update(op rpc.Operation) {
	op = counted(op)
	if op.Terminal() || (r.bar == nil && op.Phase == "") {
		return
	}
	if r.bar == nil || op.Phase != r.phase || op.Unit != r.unit || (op.Total > 0) != r.known {
		r.replace(op)
	} else if op.Total > 0 && r.bar.GetMax64() != op.Total {
		r.bar.ChangeMax64(op.Total)
	}
	if op.Unit == progress.Items && op.Total <= 0 {
		// No total: the count and its rate go in the description, which
		// redraws the bar (whose spinner shows the time).
		desc := r.desc(op)
		if parts := countParts(op, r.now().Sub(r.since)); len(parts) > 0 {
			desc += " (" + strings.Join(parts, ", ") + ")"
		}
		r.bar.Describe(desc)
		return
	}
	_ = r.bar.Set64(op.Done)
}

func (r *barRenderer) desc(op rpc.Operation) string {
	desc := op.Phase
	if desc == "" {
		desc = op.Kind + " " + op.Target
	}
	limit := r.maxDesc
	if limit <= 0 {
		limit = maxDesc
	}
	return truncate(printable(desc), limit)
}

// replace swaps the bar for one fitting op's phase, on the same line.
func (r *barRenderer) replace(op rpc.Operation) {
	if r.bar != nil {
		r.stop()
		fmt.Fprint(r.w, "\r\033[K")
	}
	if op.Phase != r.phase || r.bar == nil {
		r.since = r.now()
	}
	r.phase, r.unit, r.known = op.Phase, op.Unit, op.Total > 0
	total := op.Total
	if total <= 0 {
		total = -1
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(r.w),
		progressbar.OptionSetDescription(r.desc(op)),
		progressbar.OptionEnableColorCodes(r.color),
		progressbar.OptionThrottle(r.throttle),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSpinnerType(14),
		// A bar without total redraws its spinner and clock on a timer of
		// the library's own, so that a long silent phase (mkfs) does not
		// look hung; the timer ends when the bar is finished (stop).
		progressbar.OptionSetSpinnerChangeInterval(250 * time.Millisecond),
		progressbar.OptionShowTotalBytes(op.Total > 0),
	}
	switch {
	case op.Unit == progress.Bytes:
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true), progressbar.OptionShowCount())
	case op.Unit == progress.Items && op.Total > 0:
		opts = append(opts, progressbar.OptionShowCount())
	}
	r.bar = progressbar.NewOptions64(total, opts...)
	_ = r.bar.RenderBlank()
}

// stop ends the bar. Finish ends the redraw timer of a bar without total
// (the library starts one for each); a bar with a total has none, and is
// left as it is.
func (r *barRenderer) stop() {
	if !r.known {
		_ = r.bar.Finish()
	}
	_ = r.bar.Exit()
}

func (r *barRenderer) finish(op rpc.Operation) {
	if r.bar != nil {
		if op.State == rpc.StateSucceeded && op.Phase == r.phase && r.known {
			_ = r.bar.Finish()
		}
		r.stop()
		fmt.Fprintln(r.w)
	}
	if op.ID != "" {
		fmt.Fprintf(r.w, "%s: %s\n", printable(op.ID), printable(op.State))
	}
}
