package scriptstest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakePM makes a directory of stand-ins for apt-get, dpkg-query and sudo:
// every package is installed except git, and apt-get records its arguments
// in log, noting LOCKED when lock was still held while it ran.
func fakePM(t *testing.T, lock, log string) string {
	t.Helper()
	dir := t.TempDir()
	scripts := map[string]string{
		"dpkg-query": `for a; do last=$a; done
[ "$last" = git ] && exit 1
printf 'install ok installed'`,
		"apt-get": `flock -n "` + lock + `" true || echo LOCKED >>"` + log + `"
echo "$*" >>"` + log + `"`,
		"sudo": `exec "$@"`,
	}
	for name, body := range scripts {
		writeFile(t, filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"))
		if err := os.Chmod(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// holdLock holds an flock on path for d, in a process the test owns.
func holdLock(t *testing.T, path string, d time.Duration) {
	t.Helper()
	cmd := exec.Command("flock", path, "sleep", strconv.Itoa(int(d.Seconds())))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Wait until the lock is taken, so the script cannot miss it.
	deadline := time.Now().Add(5 * time.Second)
	for exec.Command("flock", "-n", path, "true").Run() == nil {
		if time.Now().After(deadline) {
			t.Fatal("flock did not take the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runHostDeps(t *testing.T, bin, lock string, wait int) (stdout, stderr string, took time.Duration, err error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(repoRoot(t), "scripts", "host-deps.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"),
		"HOST_DEPS_LOCKS="+lock, "HOST_DEPS_LOCK_WAIT="+strconv.Itoa(wait))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err = cmd.Run()
	return o.String(), e.String(), time.Since(start), err
}

func needLockTools(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock is not installed (util-linux); the lock tests hold a lock with it")
	}
	if _, err := os.Stat("/proc/locks"); err != nil {
		t.Skip("no /proc/locks here; host-deps.sh reads the held locks from it")
	}
}

// lockedHost is a host where another package manager holds the lock for
// hold: the stand-ins' directory, the lock file and apt-get's log.
func lockedHost(t *testing.T, hold time.Duration) (bin, lock, log string) {
	t.Helper()
	needLockTools(t)
	tmp := t.TempDir()
	lock, log = filepath.Join(tmp, "lock-frontend"), filepath.Join(tmp, "apt.log")
	writeFile(t, lock, nil)
	bin = fakePM(t, lock, log)
	holdLock(t, lock, hold)
	return bin, lock, log
}

// Another package manager holding the lock makes host-deps.sh wait, saying
// so, and install once the lock is free.
func TestHostDepsWaitsForThePackageManagerLock(t *testing.T) {
	bin, lock, log := lockedHost(t, 2*time.Second)
	stdout, stderr, took, err := runHostDeps(t, bin, lock, 9)
	if err != nil {
		t.Fatalf("host-deps.sh: %v\n%s%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "another package manager is running: flock (pid ") || !strings.Contains(stdout, "holds "+lock+"; waiting for it (at most 9s)") {
		t.Errorf("no word of the wait:\n%s", stdout)
	}
	if took < time.Second {
		t.Errorf("finished in %s, with the lock held for 2s", took)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("apt-get never ran: %v\n%s%s", err, stdout, stderr)
	}
	got := string(data)
	if strings.Contains(got, "LOCKED") {
		t.Errorf("apt-get ran while the lock was held:\n%s", got)
	}
	if !strings.Contains(got, "-o DPkg::Lock::Timeout=9 update -qq") || !strings.Contains(got, "-o DPkg::Lock::Timeout=9 install -y -qq git") {
		t.Errorf("apt-get calls:\n%s", got)
	}
}

// The wait is bounded: when the lock stays held, host-deps.sh fails saying
// who holds it and what to do, and runs no apt-get.
func TestHostDepsLockWaitIsBounded(t *testing.T) {
	bin, lock, log := lockedHost(t, 60*time.Second)
	stdout, stderr, took, err := runHostDeps(t, bin, lock, 1)
	if err == nil {
		t.Fatalf("host-deps.sh succeeded with the lock held:\n%s%s", stdout, stderr)
	}
	if took > 20*time.Second {
		t.Errorf("gave up after %s, asked to wait 1s", took)
	}
	for _, want := range []string{"flock (pid ", "still holds " + lock + " after 1s", "HOST_DEPS_LOCK_WAIT"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(log); err == nil {
		data, _ := os.ReadFile(log)
		t.Errorf("apt-get ran:\n%s", data)
	}
}

// A wait that is not a number of seconds ("10m") is refused at once: it
// used to make the bound's test fail on every round, so a held lock was
// waited for for ever.
func TestHostDepsRefusesABadLockWait(t *testing.T) {
	bin, lock, log := lockedHost(t, 60*time.Second)
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(repoRoot(t), "scripts", "host-deps.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOST_DEPS_LOCKS="+lock, "HOST_DEPS_LOCK_WAIT=10m")
	cmd.WaitDelay = time.Second
	var e bytes.Buffer
	cmd.Stderr = &e
	done := make(chan error, 1)
	go func() { done <- cmd.Run() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(e.String(), "HOST_DEPS_LOCK_WAIT=10m is not a number of seconds") {
			t.Fatalf("host-deps.sh with HOST_DEPS_LOCK_WAIT=10m: %v\n%s", err, e.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("host-deps.sh with HOST_DEPS_LOCK_WAIT=10m still waits after 15s:\n%s", e.String())
	}
	if _, err := os.Stat(log); err == nil {
		t.Error("apt-get ran")
	}
}

// `make lint` needs shellcheck; `make deps` (host-deps.sh) is how a fresh
// machine gets what the Makefile needs, so it must install it too.
func TestHostDepsInstallsWhatLintNeeds(t *testing.T) {
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "dpkg-query"), []byte("#!/bin/sh\nfor a; do last=$a; done\n[ \"$last\" = shellcheck ] && exit 1\nprintf 'install ok installed'\n"))
	writeFile(t, filepath.Join(bin, "apt-get"), []byte("#!/bin/sh\nexit 0\n"))
	for _, n := range []string{"dpkg-query", "apt-get"} {
		if err := os.Chmod(filepath.Join(bin, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(repoRoot(t), "scripts", "host-deps.sh"), "--check")
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing packages: shellcheck") {
		t.Fatalf("host-deps.sh --check without shellcheck: %v\n%s", err, out)
	}
}
