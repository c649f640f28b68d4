package golden

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/progress"
)

// phaseRec is one phase as a recording reporter saw it.
type phaseRec struct {
	name        string
	unit        progress.Unit
	done, total int64
}

type recorder struct{ phases []phaseRec }

func (r *recorder) Phase(name string) { r.phases = append(r.phases, phaseRec{name: name}) }
func (r *recorder) SetTotal(total int64, unit progress.Unit) {
	cur := &r.phases[len(r.phases)-1]
	cur.total, cur.unit = total, unit
}
func (r *recorder) Add(n int64) { r.phases[len(r.phases)-1].done += n }

func (r *recorder) find(t *testing.T, name string) phaseRec {
	t.Helper()
	for i := len(r.phases) - 1; i >= 0; i-- { // the last: a header is named again when its count starts
		if r.phases[i].name == name {
			return r.phases[i]
		}
	}
	t.Fatalf("no phase %q in %+v", name, r.phases)
	return phaseRec{}
}

// feed runs a captured log (testdata, from real runs on Debian 12 building
// the default image's package set) through a bootLog.
func feed(t *testing.T, file string) *recorder {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := &recorder{}
	b := newBootLog(rec)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b.line(sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// checkSane holds for every phase of every tool: few phases (not one per
// package), no count past its total, and a count only in a typed unit.
func checkSane(t *testing.T, rec *recorder) {
	t.Helper()
	if len(rec.phases) > 25 {
		t.Errorf("%d phases; want a handful, not one per package", len(rec.phases))
	}
	for _, p := range rec.phases {
		if p.total > 0 && p.done > p.total {
			t.Errorf("phase %q: done %d past total %d", p.name, p.done, p.total)
		}
		if p.done > 0 && p.unit != progress.Items {
			t.Errorf("phase %q: counts %d in unit %q", p.name, p.done, p.unit)
		}
		if strings.HasPrefix(p.name, "Retrieving ") && p.name != "Retrieving InRelease" && p.name != "Retrieving Packages" {
			t.Errorf("a package became a phase: %q", p.name)
		}
	}
}

func TestBootLogDebootstrap(t *testing.T) {
	rec := feed(t, "debootstrap.log")
	checkSane(t, rec)
	want := []phaseRec{
		{"retrieving packages", progress.Items, 153, 0}, // debootstrap says no total up front
		{"extracting required packages", progress.Items, 88, 0},
		{"unpacking required packages", progress.Items, 88, 88},
		{"configuring required packages", progress.Items, 89, 89}, // one more than extracted: the total rises
		{"unpacking the base system", progress.Items, 53, 0},      // not known: see debHeaders
		{"configuring the base system", progress.Items, 55, 0},
	}
	for _, w := range want {
		if got := rec.find(t, w.name); got != w {
			t.Errorf("phase %q = %+v, want %+v", w.name, got, w)
		}
	}
	last := rec.phases[len(rec.phases)-1]
	if last.name != "Base system installed successfully." {
		t.Errorf("last phase %q", last.name)
	}
}

func TestBootLogMmdebstrap(t *testing.T) {
	rec := feed(t, "mmdebstrap.log")
	checkSane(t, rec)
	want := []phaseRec{
		{"downloading 69 packages (29.7 MB)", progress.Items, 69, 69},
		{"installing essential packages", progress.Items, 69, 69},
		{"downloading 91 packages (30.2 MB)", progress.Items, 91, 91},
		{"installing remaining packages inside the chroot", progress.Items, 91, 91},
	}
	for _, w := range want {
		if got := rec.find(t, w.name); got != w {
			t.Errorf("phase %q = %+v, want %+v", w.name, got, w)
		}
	}
	// apt-get update's own Get: lines count nothing.
	if p := rec.find(t, "running apt-get update"); p.done != 0 || p.unit != progress.None {
		t.Errorf("apt-get update counted: %+v", p)
	}
}

// Output the parser does not know stays a phase per "I: " line and never
// produces a count.
func TestBootLogUnknownOutput(t *testing.T) {
	rec := &recorder{}
	b := newBootLog(rec)
	for _, l := range []string{"I: something new", "W: a warning", "Get:1 http://x y", "Setting up z (1) ...", "I: Unpacking foo..."} {
		b.line(l)
	}
	for _, p := range rec.phases {
		if p.done != 0 || p.total != 0 {
			t.Errorf("phase %+v counted output it does not know", p)
		}
	}
	if len(rec.phases) != 2 || rec.phases[0].name != "something new" || rec.phases[1].name != "Unpacking foo" {
		t.Errorf("phases %+v", rec.phases)
	}
}

// FuzzBootLog feeds arbitrary output: the parser never panics, never counts
// past a total, and counts only in items.
func FuzzBootLog(f *testing.F) {
	for _, file := range []string{"debootstrap.log", "mmdebstrap.log"} {
		data, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data[:min(len(data), 4096)]))
	}
	f.Add("I: Checking component main on x...\nI: Retrieving a 1\n0 upgraded, 2 newly installed, 0 to remove\nNeed to get 1 MB/2 MB of archives.\nGet:1 x\nSetting up a (1) ...\n")
	f.Fuzz(func(t *testing.T, out string) {
		rec := &recorder{}
		b := newBootLog(rec)
		for _, l := range strings.Split(out, "\n") {
			if len(rec.phases) == 0 {
				rec.Phase("start") // SetTotal and Add need a phase to land in
			}
			b.line(l)
		}
		for _, p := range rec.phases {
			if p.total > 0 && p.done > p.total {
				t.Fatalf("phase %q: done %d past total %d", p.name, p.done, p.total)
			}
			if (p.done > 0 || p.total > 0) && p.unit != progress.Items {
				t.Fatalf("phase %q counts in unit %q", p.name, p.unit)
			}
		}
	})
}
