package consolelog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text\n", "plain text\n"},
		{"tab\there", "tab\there"},
		{"\x1b[31mred\x1b[0m", "red"},
		{"\x1b[2J\x1b[1;1Hcleared", "cleared"},
		{"\x1b]0;evil title\x07after", "after"},
		{"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"},
		{"\x1bP+q544e\x1b\\dcs", "dcs"},
		{"\x1b(Bcharset", "charset"},
		{"\x1bcreset", "reset"},
		{"cr\rover", "crover"},
		{"bell\x07back\x08del\x7f", "bellbackdel"},
		{"\u009b31mc1 csi", "c1 csi"},
		{"\u009d0;t\u009cc1 osc", "c1 osc"},
		{"\u0085nel", "nel"},
		{"bidi \u202eevil\u202c", "bidi evil"},
		{"bad \xff utf8", "bad \ufffd utf8"},
		{"raw c1 \x9b31m", "raw c1 \ufffd31m"},
		{"unterminated \x1b]0;title", "unterminated "},
		{"trailing esc \x1b", "trailing esc "},
		{"ünïcödé ✓", "ünïcödé ✓"},
	} {
		if got := Sanitize([]byte(c.in)); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// safe reports what of s a terminal could still act on.
func unsafeRune(s string) (rune, bool) {
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || bidi(r):
			return r, true
		}
	}
	return 0, false
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"\x1b[31mred", "\x1b]0;t\x07", "\u009b1m", "a\rb", "\xff\xfe", "\x1bP\x1b\\", "\u202e"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("Sanitize(%q) = %q: not valid UTF-8", in, out)
		}
		if r, bad := unsafeRune(out); bad {
			t.Fatalf("Sanitize(%q) = %q: keeps %U", in, out, r)
		}
		if again := Sanitize([]byte(out)); again != out {
			t.Fatalf("Sanitize is not idempotent on %q: %q then %q", in, out, again)
		}
		if len(out) > 3*len(in) {
			t.Fatalf("Sanitize(%q) grew to %d bytes", in, len(out))
		}
	})
}

// A hostile guest's log: huge, with escape sequences in its last lines.
// Tail reads only its end and strips the sequences.
func TestTailOfHugeHostileLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// 8 GiB, sparse: reading it all would take long and fail the test's
	// memory; Tail must seek.
	if err := f.Truncate(8 << 30); err != nil {
		t.Skipf("cannot make a sparse file here: %v", err)
	}
	if _, err := f.Seek(0, 2); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("\npartial line cut by the bound\n")
	for i := 0; i < 30; i++ {
		b.WriteString("line " + strings.Repeat("x", i) + "\n")
	}
	b.WriteString("\x1b]0;pwned\x07\x1b[2J\x1b[31mkernel panic\x1b[0m\r\n")
	b.WriteString(strings.Repeat("y", 5000) + "\n")
	if _, err := f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	lines := Tail(path, 15)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Tail took %s on a huge log", d)
	}
	if len(lines) != 15 {
		t.Fatalf("%d lines, want 15: %q", len(lines), lines)
	}
	if got := lines[13]; got != "kernel panic" {
		t.Errorf("line 14 = %q, want the sequences stripped", got)
	}
	if got := lines[14]; utf8.RuneCountInString(got) != maxLineRunes+1 || !strings.HasSuffix(got, "…") {
		t.Errorf("the long line was not cut: %d runes", utf8.RuneCountInString(got))
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\x00\x1b\r\x07") {
			t.Errorf("line %q keeps control bytes", l)
		}
	}
	if Tail(filepath.Join(t.TempDir(), "missing"), 5) != nil {
		t.Error("a missing log gave lines")
	}
}

// Rotation keeps the log bounded while a writer appends through its own
// descriptor, as the VMM does, and keeps the newest bytes in NAME.1.
func TestRotateWithAppendingWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const max = 4096
	line := []byte(strings.Repeat("z", 99) + "\n")
	for i := 0; i < 100; i++ {
		w.Write(line)
	}
	if rotated, err := Rotate(path, max); err != nil || !rotated {
		t.Fatalf("Rotate = %v, %v; want a rotation", rotated, err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Errorf("log is %d bytes after rotation, want 0", fi.Size())
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil || len(old) != max || !bytes.HasSuffix(old, line) {
		t.Errorf("rotated log: %d bytes, %v; want the last %d", len(old), err, max)
	}
	w.Write([]byte("after\n"))
	if b, _ := os.ReadFile(path); string(b) != "after\n" {
		t.Errorf("the writer's next line went to %q, want the start of the log (append mode)", b)
	}
	if rotated, err := Rotate(path, max); err != nil || rotated {
		t.Errorf("a small log was rotated: %v, %v", rotated, err)
	}
	if rotated, err := Rotate(filepath.Join(t.TempDir(), "none"), max); err != nil || rotated {
		t.Errorf("a missing log: %v, %v", rotated, err)
	}
}

func TestKeepBoundsANoisyWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Keep(ctx, nil, []string{path}, 64<<10, 5*time.Millisecond, nil)
	}()
	chunk := bytes.Repeat([]byte("noise\n"), 1000)
	for i := 0; i < 400; i++ { // 2.4 MB
		w.Write(chunk)
		if i%20 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	fi, _ := os.Stat(path)
	if fi.Size() > 64<<10 {
		t.Errorf("log is %d bytes, want at most %d", fi.Size(), 64<<10)
	}
	if fi, err := os.Stat(path + ".1"); err != nil || fi.Size() != 64<<10 {
		t.Errorf("rotated log: %v", err)
	}
}

// vm logs streams the console through a Writer: whatever way the stream is
// cut into writes, no escape sequence reaches the terminal and the text
// comes through whole.
func TestWriterSanitizesAStreamCutAnywhere(t *testing.T) {
	in := "boot \x1b]52;c;cm0gLXJmIH4K\x07ok \x1b[2J\x1b[31mred\x1b[0m caf\xc3\xa9 \u202edone\n"
	want := Sanitize([]byte(in))
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		w := NewWriter(&out)
		for _, part := range []string{in[:cut], in[cut:]} {
			if _, err := w.Write([]byte(part)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("cut at %d: %q, want %q", cut, out.String(), want)
		}
	}
}

func TestRotateDoesNotWriteThroughSymlinks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("y"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	// Symlinks at the names the copy goes to, and at the fixed temporary
	// name older versions opened with O_TRUNC, point at a file that must
	// stay as it is.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("victim"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{path + ".1", path + ".1.tmp"} {
		if err := os.Symlink(victim, l); err != nil {
			t.Fatal(err)
		}
	}
	if rotated, err := Rotate(path, 4096); err != nil || !rotated {
		t.Fatalf("Rotate = %v, %v; want a rotation", rotated, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "victim" {
		t.Fatalf("rotation wrote through a symlink: victim holds %d bytes", len(b))
	}
	fi, err := os.Lstat(path + ".1")
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 4096 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rotated copy: %v, %v; want a regular 0600 file of 4096 bytes", fi, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
