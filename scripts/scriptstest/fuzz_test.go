package scriptstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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

// TestFuzzScriptDeadlineRace checks how fuzz.sh treats Go's fuzz-coordinator
// race (golang/go#75804): a bare "context deadline exceeded" that wrote no
// input is run once more, and passes if the second run does; the same
// failure twice, or one that wrote an input, fails the target.
func TestFuzzScriptDeadlineRace(t *testing.T) {
	mod := t.TempDir()
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "fuzz.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for rel, s := range map[string]string{
		"scripts/fuzz.sh": string(script),
		"p/p_test.go":     "package p\n\nfunc FuzzP(f *testing.F) {}\n",
	} {
		p := filepath.Join(mod, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A stand-in for go: it fails the way the race does for the first
	// $RACES calls (writing an input too when $WRITE is set), then passes.
	fakeGo := filepath.Join(mod, "fakego")
	if err := os.WriteFile(fakeGo, []byte(`#!/usr/bin/env bash
n=$(( $(cat "$COUNT" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$COUNT"
echo "fuzz: elapsed: 3s, execs: 1234 (411/sec), new interesting: 0 (total: 1)"
if [ "$n" -le "$RACES" ]; then
  if [ -n "${WRITE:-}" ]; then mkdir -p p/testdata/fuzz/FuzzP; echo x >"p/testdata/fuzz/FuzzP/in$n"; fi
  printf -- '--- FAIL: FuzzP (5.01s)\n    context deadline exceeded\nFAIL\n'
  exit 1
fi
echo ok
`), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(races int, write bool) (string, int, error) {
		count := filepath.Join(t.TempDir(), "count")
		cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(mod, "scripts", "fuzz.sh"))
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GO="+fakeGo, "COUNT="+count, "RACES="+strconv.Itoa(races))
		if write {
			cmd.Env = append(cmd.Env, "WRITE=1")
		}
		out, err := cmd.CombinedOutput()
		calls, _ := os.ReadFile(count)
		n, _ := strconv.Atoi(strings.TrimSpace(string(calls)))
		_ = os.RemoveAll(filepath.Join(mod, "p", "testdata"))
		return string(out), n, err
	}
	if out, n, err := run(1, false); err != nil || n != 2 || !strings.Contains(out, "golang/go#75804") {
		t.Fatalf("one race: err %v after %d runs, want a pass after 2 with a note:\n%s", err, n, out)
	}
	if out, n, err := run(2, false); err == nil || n != 2 || !strings.Contains(out, "1 of 1 targets failed") {
		t.Fatalf("two races: err %v after %d runs, want a failure after 2:\n%s", err, n, out)
	}
	if out, n, err := run(1, true); err == nil || n != 1 {
		t.Fatalf("a failure that wrote an input: err %v after %d runs, want a failure after 1:\n%s", err, n, out)
	}
}
