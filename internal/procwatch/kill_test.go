package procwatch

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestKillMatchingKillsOnlyMatches(t *testing.T) {
	dir := t.TempDir()
	// Marker args sleep adds up: 1000+0.0 vs 1000+0.00 differ only in text.
	victims := []*exec.Cmd{sleeper(t, dir, "0.0"), sleeper(t, dir, "0.0")}
	spared := []*exec.Cmd{sleeper(t, dir, "0.00"), sleeper(t, t.TempDir(), "0.0")}
	for _, c := range append(slices.Clone(victims), spared...) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			if p := (Proc{PID: c.Process.Pid}); p.CmdlineString() != "" && p.CmdlineString() != "sleep" {
				if cwd, _ := p.Cwd(); cwd != "" {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d never showed its command line", c.Process.Pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	match := func(p Proc) bool {
		args, err := p.Cmdline()
		cwd, _ := p.Cwd()
		return err == nil && cwd == dir && slices.Equal(args, []string{"sleep", "1000", "0.0"})
	}
	killed, err := Kill(context.Background(), match, 5*time.Second)
	if err != nil {
		t.Errorf("Kill: %v", err)
	}
	var want []int
	for _, c := range victims {
		want = append(want, c.Process.Pid)
	}
	slices.Sort(killed)
	slices.Sort(want)
	if !slices.Equal(killed, want) {
		t.Errorf("killed %v, want %v", killed, want)
	}
	// Kill waited: the victims have exited (zombies until reaped here).
	for _, c := range victims {
		if Running(c.Process.Pid) {
			t.Errorf("victim %d still runs after Kill returned", c.Process.Pid)
		}
	}
	for _, c := range spared {
		if !Running(c.Process.Pid) {
			t.Errorf("pid %d (%v in %s) was killed though it does not match", c.Process.Pid, c.Args, c.Dir)
		}
	}
	if n := KillMatching(match, time.Second); n != 0 {
		t.Errorf("second KillMatching killed %d; the victims were already dead", n)
	}
}

func TestKillNeverKillsSelf(t *testing.T) {
	if n := KillMatching(func(p Proc) bool { return p.PID == os.Getpid() }, time.Second); n != 0 {
		t.Errorf("KillMatching killed %d", n)
	}
}

func TestProcReaders(t *testing.T) {
	dir := t.TempDir()
	c := sleeper(t, dir, "0.000")
	p := Proc{PID: c.Process.Pid}
	deadline := time.Now().Add(5 * time.Second)
	for args, _ := p.Cmdline(); !slices.Equal(args, []string{"sleep", "1000", "0.000"}); args, _ = p.Cmdline() {
		if time.Now().After(deadline) {
			t.Fatalf("cmdline %q", args)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if cwd, err := p.Cwd(); err != nil || cwd != dir {
		t.Errorf("Cwd = %q, %v; want %q", cwd, err, dir)
	}
	if !p.InRoot("/") || p.InRoot(dir) {
		t.Error("InRoot: the child is not in / alone")
	}
	uids, err := p.UIDs()
	if err != nil || len(uids) != 4 || int(uids[0]) != os.Getuid() {
		t.Errorf("UIDs = %v, %v; want 4 uids starting with %d", uids, err, os.Getuid())
	}
	procs, err := Scan()
	if err != nil || !slices.Contains(procs, p) || !slices.Contains(procs, Proc{PID: os.Getpid()}) {
		t.Errorf("Scan misses the child or this process (%d entries, %v)", len(procs), err)
	}
}
