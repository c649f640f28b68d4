package scriptstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestFuzzScript runs scripts/fuzz.sh on a throwaway module with a sound
// target and one that crashes: it runs both one by one, prints a line per
// target with its exec count, and fails because of the crash; a FUZZ filter
// that leaves only the sound target passes.
func TestFuzzScript(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH; fuzz.sh runs it")
	}
	mod := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(mod, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "fuzz.sh"))
	if err != nil {
		t.Fatal(err)
	}
	write("scripts/fuzz.sh", string(script))
	write("go.mod", "module fz\n\ngo 1.22\n")
	write("sound/s_test.go", `package sound

import "testing"

func FuzzSound(f *testing.F) {
	f.Add([]byte("a"))
	f.Fuzz(func(t *testing.T, b []byte) {})
}
`)
	write("crash/c_test.go", `package crash

import "testing"

func FuzzCrash(f *testing.F) {
	f.Add([]byte("boom"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 {
			panic("boom")
		}
	})
}
`)
	run := func(filter string) (string, error) {
		cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(mod, "scripts", "fuzz.sh"))
		cmd.Env = append(os.Environ(), "GO="+goBin, "FUZZTIME=200x", "FUZZ="+filter, "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("")
	if err == nil {
		t.Fatalf("fuzz.sh passed with a crashing target:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^ok +FuzzSound +\./sound +execs=[0-9]+ `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^FAIL +FuzzCrash +\./crash `).MatchString(out) ||
		!strings.Contains(out, "1 of 2 targets failed") {
		t.Fatalf("fuzz.sh output lacks a line per target or the failure:\n%s", out)
	}
	if out, err := run("^FuzzSound$"); err != nil || !strings.Contains(out, "1 targets ran, none failed") {
		t.Fatalf("fuzz.sh FUZZ=^FuzzSound$ = %v:\n%s", err, out)
	}
	if out, err := run("^Nothing$"); err == nil || !strings.Contains(out, "no target matches") {
		t.Fatalf("fuzz.sh with a filter matching nothing = %v:\n%s", err, out)
	}
}
