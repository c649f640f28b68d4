package cli

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"banger/internal/progress"
	"banger/internal/rpc"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"retrieving packages":         "retrieving packages",
		"héllo wörld":                 "héllo wörld",
		"evil\x1b]0;owned\x07name":    `evil\x1b]0;owned\aname`,
		"two\nlines\tand a \r return": `two\nlines\tand a \r return`,
		"bad \xff utf8":               `bad \xff utf8`,
		"rtl \u202egpj.exe":           `rtl \u202egpj.exe`,
		"c1 \u009b31m":                `c1 \u009b31m`,
		"":                            "",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	// Cut on a rune boundary, never inside one.
	s := strings.Repeat("é", 30)
	if got := truncate(s, 40); !utf8.ValidString(got) || len(got) > 40 || !strings.HasSuffix(got, "...") {
		t.Errorf("truncate(%q, 40) = %q", s, got)
	}
}

// TestRenderersEscapeHostileText: a phase named after a file of a pulled
// image (an import warning) or a remote error may carry escape sequences;
// neither renderer, nor a table, may pass them to the terminal.
func TestRenderersEscapeHostileText(t *testing.T) {
	evil := "warning: xattr of \x1b]0;pwned\x07\x1b[2J/etc/x left out\nfake: succeeded"
	op := rpc.Operation{ID: "op-1", Kind: "image import", Target: "x\x1b[31m", State: rpc.StateRunning, Phase: evil, Unit: progress.None}
	var out bytes.Buffer
	r := &lineRenderer{w: &out, now: time.Now}
	r.update(op)
	fin := op
	fin.State, fin.Phase = rpc.StateSucceeded, "done"
	r.finish(fin)
	b := &barRenderer{}
	desc := b.desc(op)
	var tbl bytes.Buffer
	tw := newTable(&tbl, "A", "B")
	row(tw, "name\twith tab", evil)
	tw.Flush()
	for what, s := range map[string]string{"lines": out.String(), "bar": desc, "table": tbl.String()} {
		if strings.ContainsAny(s, "\x1b\x07\r") {
			t.Errorf("%s renderer passes control characters: %q", what, s)
		}
	}
	if n := strings.Count(out.String(), "\n"); n != 3 {
		t.Errorf("a newline in a phase made %d lines, want 3:\n%s", n, out.String())
	}
	if n := strings.Count(tbl.String(), "\n"); n != 2 {
		t.Errorf("a newline in a column made %d table lines, want 2:\n%s", n, tbl.String())
	}
}

// TestErrorsAreEscaped: an error can quote what came from elsewhere (the
// tail of a guest's console, a registry's answer, an argument); what it
// says reaches the terminal escaped, its line breaks kept.
func TestErrorsAreEscaped(t *testing.T) {
	t.Setenv("BANGER_DAEMON_BIN", "/bin/false")
	var stdout, stderr bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "\x1b]0;pwned\x07\x1b[2J.toml")
	Run(t.Context(), []string{"--config", cfg, "config", "show"}, strings.NewReader(""), &stdout, &stderr)
	if s := stderr.String(); strings.ContainsAny(s, "\x1b\x07") || !strings.Contains(s, `\x1b]0;pwned`) {
		t.Errorf("stderr %q", s)
	}
	if got := printableLines("start failed\nlog tail:\n\x1b[31mred\r"); got != "start failed\nlog tail:\n\\x1b[31mred\\r" {
		t.Errorf("printableLines = %q", got)
	}
}
