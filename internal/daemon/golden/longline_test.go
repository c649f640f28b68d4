package golden

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRunLoggedSurvivesALongLine: a line longer than a bufio.Scanner's
// 64 KiB (a hostile mirror's package field echoed in an error, a tool
// printing a progress bar without newlines) stopped the reader, and with
// nobody draining the pipe debootstrap blocked on its next write for ever;
// not even a cancel ended it. The output must be read to its end, and
// what follows the long line still counted.
func TestRunLoggedSurvivesALongLine(t *testing.T) {
	rec := &recorder{}
	script := `head -c 300000 /dev/zero | tr '\0' x; echo; i=0; while [ $i -lt 2000 ]; do echo "I: Retrieving pkg$i 1.0"; i=$((i+1)); done; echo "I: Base system installed successfully."`
	done := make(chan error, 1)
	go func() {
		done <- runLogged(context.Background(), rec, os.Environ(), "sh", "-c", "echo 'I: Checking component main on http://x...'; "+script)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runLogged hangs on a line over 64 KiB")
	}
	var names []string
	for _, p := range rec.phases {
		names = append(names, p.name)
	}
	if got := strings.Join(names, "|"); !strings.Contains(got, "Base system installed successfully") {
		t.Errorf("the lines after the long one were not read: phases %q", got)
	}
}

// TestReadLinesCutsLongLines: a long line reaches the parser cut to
// maxLogLine bytes, once, and the lines after it whole.
func TestReadLinesCutsLongLines(t *testing.T) {
	in := "a\n" + strings.Repeat("y", 200000) + "\nb\r\n\nlast"
	var got []string
	readLines(strings.NewReader(in), func(l string) { got = append(got, l) })
	if len(got) != 4 || got[0] != "a" || len(got[1]) != maxLogLine || got[2] != "b" || got[3] != "last" {
		t.Fatalf("readLines gave %d lines: %.80q", len(got), got)
	}
}

// TestBootLogNamesEveryPhase: garbage ("I: ...", apt lines before any
// header) must not make a phase without a name, which the CLI cannot show.
func TestBootLogNamesEveryPhase(t *testing.T) {
	rec := &recorder{}
	rec.Phase("start")
	b := newBootLog(rec)
	for _, l := range []string{"I: ...", "I: ", "I:    ...", "0 upgraded, 3 newly installed, 0 to remove", "Setting up a (1) ...", "Setting up b (1) ..."} {
		b.line(l)
	}
	for _, p := range rec.phases {
		if strings.TrimSpace(p.name) == "" {
			t.Fatalf("a phase without a name: %+v", rec.phases)
		}
	}
	if p := rec.find(t, "installing packages"); p.done != 2 || p.total != 3 {
		t.Errorf("installing packages: %+v", p)
	}
}
