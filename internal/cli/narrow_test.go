package cli

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"banger/internal/progress"
	"banger/internal/testutil/ptypair"
)

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// TestBarFitsANarrowTerminal: on a terminal narrower than the bar's usual
// line, every redraw must still fit one line; a line that wraps is not
// redrawn in place by "\r", and the screen fills with copies of the bar.
func TestBarFitsANarrowTerminal(t *testing.T) {
	for _, cols := range []uint16{20, 40, 52, 60, 80, 200} {
		master, slave, err := ptypair.Open()
		if err != nil {
			t.Skipf("no pseudo-terminal here: %v", err)
		}
		if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: 24}); err != nil {
			t.Fatal(err)
		}
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
		br, isBar := r.(*barRenderer)
		if isBar {
			br.throttle = 0
		}
		steps := pullSteps()
		// A long phase with a byte total: the widest line a bar draws.
		long := steps[len(steps)-2].op
		long.Phase, long.Done, long.Total, long.Unit = strings.Repeat("p", 70), 96<<20, 96<<20, progress.Bytes
		final := steps[len(steps)-1]
		steps = append(steps[:len(steps)-1], step{0, long}, final)
		for _, s := range steps[:len(steps)-1] {
			r.update(s.op)
		}
		r.finish(steps[len(steps)-1].op)
		slave.Close()
		wg.Wait()
		master.Close()
		waitNoBarTimers(t)
		out := ansiRE.ReplaceAllString(tty.String(), "")
		if !isBar {
			// Plain lines, each written once: they may wrap.
			if strings.Contains(out, "\r") && !strings.Contains(out, "\r\n") {
				t.Errorf("%d columns: plain lines redrawn in place:\n%q", cols, out)
			}
			continue
		}
		for _, seg := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
			if w := utf8.RuneCountInString(strings.TrimRight(seg, " ")); w > int(cols) {
				t.Errorf("%d columns: a line of %d columns: %q", cols, w, seg)
			}
		}
	}
}
