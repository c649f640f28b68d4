package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestErrorLines: each error of a joined error gets a line of its own,
// after what wraps them all; anything else is folded to one line.
func TestErrorLines(t *testing.T) {
	a, b := errors.New("config f:1: a is bad"), errors.New("config f:2: b\nis bad")
	for _, c := range []struct {
		err  error
		want []string
	}{
		{errors.Join(a, b), []string{"config f:1: a is bad", "config f:2: b is bad"}},
		{fmt.Errorf("load config:\n %w", errors.Join(a, b)), []string{"load config: config f:1: a is bad", "load config: config f:2: b is bad"}},
		{fmt.Errorf("load: %w", errors.Join(a, errors.Join(b, a))), []string{"load: config f:1: a is bad", "load: config f:2: b is bad", "load: config f:1: a is bad"}},
		{fmt.Errorf("%w; fix it", errors.Join(a, b)), []string{"config f:1: a is bad config f:2: b is bad; fix it"}},
		{errors.New("start failed\n  at x\n\nlog tail\nline 2\n"), []string{"start failed at x\n\nlog tail\nline 2"}},
	} {
		if got := errorLines(c.err); !slices.Equal(got, c.want) {
			t.Errorf("errorLines(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}

// The names of entries a guest sends are the guest's: a skipped one is
// printed quoted, escape sequences and line breaks as text.
func TestSkippedWarningQuotesTheGuestsName(t *testing.T) {
	got := skippedWarning("vm1", "dev/\x1b]52;c;ZXZpbA==\x07\nbanger: done", "FIFO")
	if strings.ContainsAny(got, "\x1b\x07\n") {
		t.Fatalf("warning %q carries the guest's control characters", got)
	}
	if !strings.Contains(got, `vm1:"dev/\x1b]52`) {
		t.Fatalf("warning %q does not name the entry", got)
	}
}
