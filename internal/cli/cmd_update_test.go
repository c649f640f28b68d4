package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/cli"
	"banger/internal/daemon/privhelper"
	"banger/internal/testutil"
	"banger/internal/testutil/treestate"
	"banger/internal/update"
)

func TestUpdateFlagErrors(t *testing.T) {
	noDaemonHome(t)
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"update", "--check", "--rollback"}, "--check and --rollback do not go together"},
		{[]string{"update", "--rollback", "--version", "v1.0.0"}, "it takes no --version or --allow-downgrade"},
		{[]string{"update", "--rollback", "--allow-downgrade"}, "it takes no --version or --allow-downgrade"},
		{[]string{"update", "--check", "--yes"}, "--check changes nothing"},
		{[]string{"update", "-o", "json"}, "-o applies to --check only"},
		{[]string{"update", "--check", "-o", "xml"}, "is not an output format"},
		{[]string{"update", "now"}, "banger update takes no arguments"},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := cli.Run(context.Background(), c.args, strings.NewReader(""), &out, &errb)
			first := strings.SplitN(errb.String(), "\n", 2)[0]
			if code != cli.ExitUsage || !strings.Contains(first, c.err) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errb.String(), cli.ExitUsage, c.err)
			}
		})
	}
}

// updateEnv is an install made of copies of the test binary (which runs as
// banger or bangerd by its name, see TestMain) and the environment to run
// it in: its own home, runtime dir and a fake systemctl that records its
// calls and says the helper is not active, whatever the host runs.
type updateEnv struct {
	dir, home, calls string
	env              []string
}

func newUpdateEnv(t *testing.T, binDir string) *updateEnv {
	t.Helper()
	e := &updateEnv{dir: binDir, home: t.TempDir()}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range update.Binaries {
		testutil.CopyTestBinary(t, binDir, n)
	}
	fake := t.TempDir()
	e.calls = filepath.Join(fake, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + e.calls + "\ncase \"$*\" in is-active*) echo inactive; exit 3;; *show*) echo 0;; esac\nexit 0\n"
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// No helper, whatever the host runs at the default socket.
	writeUpdateConfig(t, e.home, filepath.Join(e.home, "no-helper.sock"))
	run := testutil.ShortDir(t, "bgu")
	e.env = append(os.Environ(),
		"HOME="+e.home, "XDG_CONFIG_HOME=", "XDG_STATE_HOME=", "BANGER_CONFIG=", "BANGER_DAEMON_BIN=",
		"XDG_RUNTIME_DIR="+run, "NO_COLOR=1", "SUDO_USER=", "SUDO_UID=",
		"PATH="+fake+":"+os.Getenv("PATH"))
	t.Cleanup(func() {
		// Never leave a daemon behind, whatever the test did.
		_ = exec.Command(filepath.Join(binDir, "banger"), "daemon", "stop").Run()
		stopDaemon(filepath.Join(e.home, ".local", "state", "banger"))
	})
	return e
}

// writeUpdateConfig points the config of home at helper socket sock.
func writeUpdateConfig(t *testing.T, home, sock string) {
	t.Helper()
	cfg := filepath.Join(home, ".config", "banger", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("helper_socket = \""+sock+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *updateEnv) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.dir, "banger"), args...)
	cmd.Env = e.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader("")
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestUpdateRefusesWhatIsNotAnInstall(t *testing.T) {
	t.Run("source checkout", func(t *testing.T) {
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module banger\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e := newUpdateEnv(t, filepath.Join(root, "build", "bin"))
		before := treestate.Snapshot(t, root)
		_, stderr, code := e.run(t, "update", "--yes")
		if code != cli.ExitFailure || !strings.Contains(stderr, "banger runs from a source checkout ("+root+"): rebuild it there with `make build`") || !strings.Contains(stderr, "nothing was changed") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if after := treestate.Snapshot(t, root); !reflect.DeepEqual(before, after) {
			t.Fatal("the checkout changed")
		}
	})
	t.Run("missing agent", func(t *testing.T) {
		e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
		os.Remove(filepath.Join(e.dir, "banger-vsock-agent"))
		before := treestate.Snapshot(t, e.dir)
		for _, args := range [][]string{{"update", "--yes"}, {"update", "--rollback", "--yes"}} {
			_, stderr, code := e.run(t, args...)
			if code != cli.ExitFailure || !strings.Contains(stderr, "banger-vsock-agent is missing") {
				t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
			}
		}
		if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
			t.Fatal("the install changed")
		}
	})
}

// markBinaries makes each binary (or its .prev) of the install a distinct
// file: the test binary with a trailing marker ("old" or "new"), which an
// ELF ignores.
func markBinaries(t *testing.T, dir, suffix, marker string) {
	t.Helper()
	for _, n := range update.Binaries {
		src := filepath.Join(dir, n)
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"old", "new"} {
			data = bytes.TrimSuffix(data, []byte("\nmarker:"+m))
		}
		data = append(data, "\nmarker:"+marker...)
		if err := os.WriteFile(src+suffix, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func assertMarked(t *testing.T, dir, marker string) {
	t.Helper()
	for _, n := range update.Binaries {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.HasSuffix(data, []byte("\nmarker:"+marker)) {
			t.Errorf("%s is not the %s binary (%v)", n, marker, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, n+update.PrevSuffix)); !os.IsNotExist(err) {
			t.Errorf("%s.prev left after the rollback (%v)", n, err)
		}
	}
}

// A by-hand rollback puts the .prev binaries back, starts the restored
// bangerd (the test binary, version "dev") through the CLI's real daemon
// control, checks its version, and leaves running only what ran before.
func TestUpdateRollback(t *testing.T) {
	for _, running := range []bool{false, true} {
		t.Run(map[bool]string{false: "bangerd not running", true: "bangerd running"}[running], func(t *testing.T) {
			e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
			markBinaries(t, e.dir, update.PrevSuffix, "old")
			markBinaries(t, e.dir, "", "new")
			j, _ := json.Marshal(update.Journal{From: "dev", To: "v0.0.2", State: update.StateDone})
			if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
				t.Fatal(err)
			}
			if running {
				if out, stderr, code := e.run(t, "daemon", "start"); code != 0 {
					t.Fatalf("daemon start: %d %s %s", code, out, stderr)
				}
			}
			// Without a terminal and without --yes: refused, nothing changed.
			before := treestate.Snapshot(t, e.dir)
			if _, stderr, code := e.run(t, "update", "--rollback"); code != cli.ExitUsage || !strings.Contains(stderr, "add --yes") {
				t.Fatalf("rollback without --yes: exit %d, %q", code, stderr)
			}
			if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
				t.Fatal("a refused rollback changed the install")
			}

			out, stderr, code := e.run(t, "update", "--rollback", "--yes")
			if code != 0 {
				t.Fatalf("rollback: exit %d\nstdout %s\nstderr %s", code, out, stderr)
			}
			if !strings.Contains(out, "rolled back to dev in "+e.dir) {
				t.Errorf("stdout %q", out)
			}
			assertMarked(t, e.dir, "old")
			var got update.Journal
			b, _ := os.ReadFile(filepath.Join(e.dir, update.JournalFile))
			if json.Unmarshal(b, &got) != nil || got.State != update.StateRolledBack {
				t.Errorf("journal %s", b)
			}
			status, _, code := e.run(t, "daemon", "status")
			switch {
			case running && (code != 0 || !strings.Contains(out, "bangerd dev running (pid")):
				t.Errorf("bangerd was running and is not after the rollback: status %d %q, stdout %q", code, status, out)
			case !running && (code != 3 || !strings.Contains(out, "answered its check and was stopped again")):
				t.Errorf("bangerd was not running and is after the rollback: status %d %q, stdout %q", code, status, out)
			}
			calls, _ := os.ReadFile(e.calls)
			if !strings.Contains(string(calls), "is-active banger-helper.service") || strings.Contains(string(calls), "restart") {
				t.Errorf("systemctl calls %q: want the helper asked about and not restarted", calls)
			}

			// Nothing left to roll back to.
			before = treestate.Snapshot(t, e.dir)
			if _, stderr, code := e.run(t, "update", "--rollback", "--yes"); code != cli.ExitFailure || !strings.Contains(stderr, "already rolled back to dev") {
				t.Fatalf("second rollback: exit %d, %q", code, stderr)
			}
			if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
				t.Fatal("a refused rollback changed the install")
			}
		})
	}
}

func TestUpdateRefusesOverAnInterruptedUpdate(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	j, _ := json.Marshal(update.Journal{From: "v0.0.1", To: "v0.0.2", State: update.StateSwapping})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, e.dir)
	_, stderr, code := e.run(t, "update", "--yes")
	if code != cli.ExitFailure || !strings.Contains(stderr, "an earlier update from v0.0.1 to v0.0.2 was interrupted (swapping): run `banger update --rollback`") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("the install changed")
	}
}

// fakeHelper answers hello on a Unix socket as a helper of build version.
func fakeHelper(t *testing.T, version string) string {
	t.Helper()
	sock := filepath.Join(testutil.ShortDir(t, "bgh"), "helper.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { // ends when the listener is closed
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var req privhelper.Request
			_ = json.NewDecoder(c).Decode(&req)
			resp := privhelper.Response{OK: req.Op == privhelper.OpHello, Version: version, Protocol: privhelper.ProtocolVersion}
			_ = json.NewEncoder(c).Encode(resp)
			c.Close()
		}
	}()
	return sock
}

// With banger-helper.service active, a rollback needs root: as a user it
// is refused before anything changes, with the sudo command; as root the
// helper is restarted (a fake systemctl) and must answer its hello with
// the version put back before bangerd is started.
func TestUpdateRollbackWithTheHelper(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	script := "#!/bin/sh\necho \"$*\" >> " + e.calls + "\ncase \"$*\" in is-active*) echo active;; *show*) echo 0;; esac\nexit 0\n"
	if err := os.WriteFile(filepath.Join(filepath.Dir(e.calls), "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.home, ".config", "banger", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("helper_socket = \""+fakeHelper(t, "dev")+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	markBinaries(t, e.dir, update.PrevSuffix, "old")
	markBinaries(t, e.dir, "", "new")
	j, _ := json.Marshal(update.Journal{From: "dev", To: "v0.0.2", State: update.StateDone})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, e.dir)
	out, stderr, code := e.run(t, "update", "--rollback", "--yes")
	if os.Geteuid() != 0 {
		if code != cli.ExitFailure || !strings.Contains(stderr, "banger-helper.service runs and must be restarted on the new bangerd, which needs root: run `sudo "+filepath.Join(e.dir, "banger")+" update --rollback --yes`") {
			t.Fatalf("as a user: exit %d, stderr %q", code, stderr)
		}
		if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
			t.Fatal("a refused rollback changed the install")
		}
		return
	}
	if code != 0 {
		t.Fatalf("rollback: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	assertMarked(t, e.dir, "old")
	calls, _ := os.ReadFile(e.calls)
	if !strings.Contains(string(calls), "restart banger-helper.service") || !strings.Contains(out, "banger-helper.service restarted on dev") {
		t.Errorf("systemctl calls %q, stdout %q: want the helper restarted", calls, out)
	}
}

// An update killed after its swap (journal "swapped", the binaries all the
// new version, bangerd stopped) is finished by running `banger update`
// again: the new bangerd is started, checked (and, as it did not run,
// stopped again) and the journal marked done; the .prev files stay.
func TestUpdateResumesAnUpdateKilledAfterItsSwap(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	markBinaries(t, e.dir, update.PrevSuffix, "old")
	markBinaries(t, e.dir, "", "new")
	j, _ := json.Marshal(update.Journal{From: "v0.0.1", To: "dev", State: update.StateSwapped})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, e.dir)
	if _, stderr, code := e.run(t, "update", "--yes", "--version", "v9.9.9"); code != cli.ExitFailure || !strings.Contains(stderr, "finish it first with `banger update`") {
		t.Fatalf("another --version over a swapped update: exit %d, %q", code, stderr)
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused update changed the install")
	}
	out, stderr, code := e.run(t, "update", "--yes")
	if code != 0 || !strings.Contains(out, "the interrupted update to dev is finished in "+e.dir) || !strings.Contains(out, "answered its check and was stopped again") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	var got update.Journal
	b, _ := os.ReadFile(filepath.Join(e.dir, update.JournalFile))
	if json.Unmarshal(b, &got) != nil || got != (update.Journal{From: "v0.0.1", To: "dev", State: update.StateDone}) {
		t.Errorf("journal %s", b)
	}
	for _, n := range update.Binaries {
		data, err := os.ReadFile(filepath.Join(e.dir, n+update.PrevSuffix))
		if err != nil || !bytes.HasSuffix(data, []byte("\nmarker:old")) {
			t.Errorf("%s.prev is not the old binary (%v)", n, err)
		}
	}
	// A journal "swapped" towards another version than this banger's is
	// not resumed: the binaries are not what it says.
	j, _ = json.Marshal(update.Journal{From: "v0.0.1", To: "v0.0.2", State: update.StateSwapped})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	before = treestate.Snapshot(t, e.dir)
	if _, stderr, code := e.run(t, "update", "--yes"); code != cli.ExitFailure || !strings.Contains(stderr, "interrupted after its binaries were replaced, but this banger is dev, not v0.0.2: run `banger update --rollback` to put v0.0.1 back; nothing was changed") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused update changed the install")
	}
}

// A helper that answers while systemd says banger-helper.service is not
// active runs outside its unit: the update cannot restart it, so it is
// refused before anything changes.
func TestUpdateRefusesAHelperRunningOutsideItsUnit(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	writeUpdateConfig(t, e.home, fakeHelper(t, "dev"))
	markBinaries(t, e.dir, update.PrevSuffix, "old")
	before := treestate.Snapshot(t, e.dir)
	for _, args := range [][]string{{"update", "--yes"}, {"update", "--rollback", "--yes"}} {
		_, stderr, code := e.run(t, args...)
		if code != cli.ExitFailure || !strings.Contains(stderr, "a banger helper (version dev) answers, but banger-helper.service is not active") || !strings.Contains(stderr, "nothing was changed") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused update changed the install")
	}
}

// While `banger update` holds its install's lock and its journal says it
// is under way, another banger command does not start a bangerd from that
// install: it waits for the update to finish, then starts it.
func TestDaemonStartWaitsForAnUpdate(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	in, err := update.Locate(filepath.Join(e.dir, "banger"))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(update.Journal{From: "v0.0.1", To: "dev", State: update.StateSwapped})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	unlock, err := in.Lock()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e.dir, "banger"), "daemon", "start")
	cmd.Env = e.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		unlock()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(1500 * time.Millisecond)
	if _, _, code := e.run(t, "daemon", "status"); code != 3 {
		t.Errorf("bangerd runs while the update holds the lock (status exit %d)", code)
	}
	select {
	case err := <-done:
		t.Fatalf("daemon start ended while the update holds the lock: %v, %s", err, errb.String())
	default:
	}
	unlock()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(errb.String(), "Waiting for `banger update` in "+e.dir+" to finish before starting bangerd") {
			t.Fatalf("daemon start: %v\nstdout %s\nstderr %s", err, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("daemon start did not finish after the update released its lock")
	}
	if _, _, code := e.run(t, "daemon", "status"); code != 0 {
		t.Errorf("bangerd not running after the wait (status exit %d)", code)
	}
}

// A rollback killed after it put the binaries back but before it brought
// them up (journal "restored", no .prev) is finished by running it again.
func TestUpdateRollbackBringsUpRestoredBinaries(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	j, _ := json.Marshal(update.Journal{From: "dev", To: "v0.0.2", State: update.StateRestored})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := e.run(t, "update", "--rollback", "--yes")
	if code != 0 || !strings.Contains(out, "rolled back to dev in "+e.dir) || !strings.Contains(out, "bangerd dev answered its check") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	var got update.Journal
	b, _ := os.ReadFile(filepath.Join(e.dir, update.JournalFile))
	if json.Unmarshal(b, &got) != nil || got.State != update.StateRolledBack {
		t.Errorf("journal %s", b)
	}
	if _, stderr, code := e.run(t, "update", "--rollback", "--yes"); code != cli.ExitFailure || !strings.Contains(stderr, "already rolled back to dev") {
		t.Fatalf("second rollback: exit %d, %q", code, stderr)
	}
}

// Anyone who can read the install's directory can flock it: a lock held
// while the journal says no update is under way (another user's, say)
// does not hold back a daemon start.
func TestDaemonStartIgnoresALockWithoutAnUpdate(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	d, err := os.Open(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, stderr, code := e.run(t, "daemon", "start")
	if code != 0 || strings.Contains(stderr, "Waiting") || time.Since(start) > 20*time.Second {
		t.Fatalf("daemon start under a stray lock: exit %d after %s\nstdout %s\nstderr %s", code, time.Since(start), out, stderr)
	}
}

// Ctrl-C (SIGINT) while the new version is being brought up does not kill
// banger half way: the update is rolled back, the old version brought up,
// and the message says it was interrupted.
func TestUpdateInterruptedDuringItsRestartRollsBack(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	markBinaries(t, e.dir, update.PrevSuffix, "old")
	markBinaries(t, e.dir, "", "new")
	j, _ := json.Marshal(update.Journal{From: "dev", To: "dev", State: update.StateSwapped})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e.dir, "banger"), "update", "--yes")
	cmd.Env = e.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The new bangerd answered: the update is in its 3 s stay-up check.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, _, code := e.run(t, "daemon", "status"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the new bangerd never answered: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("banger update did not end after SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitFailure || !strings.Contains(errb.String(), "the update to dev was interrupted while it was being brought up, so dev was put back and runs as before") {
		t.Fatalf("update after SIGINT: %v\nstdout %s\nstderr %s", err, out.String(), errb.String())
	}
	assertMarked(t, e.dir, "old")
	var got update.Journal
	b, _ := os.ReadFile(filepath.Join(e.dir, update.JournalFile))
	if json.Unmarshal(b, &got) != nil || got.State != update.StateRolledBack {
		t.Errorf("journal %s", b)
	}
}

// A user running `banger update` on a root-owned install is refused, with
// the sudo command and "nothing was changed", before anything is touched
// (no lock file, no staging directory, no journal).
func TestUpdateAsAUserOfARootInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own the install and run banger as another user")
	}
	dir, err := os.MkdirTemp("", "banger-rootinstall-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range update.Binaries {
		testutil.CopyTestBinary(t, dir, n)
	}
	home, err := os.MkdirTemp("", "banger-userhome-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chown(home, 54321, 54321); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, dir)
	for _, args := range [][]string{{"update", "--yes"}, {"update", "--rollback", "--yes"}} {
		cmd := exec.Command(filepath.Join(dir, "banger"), args...)
		cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "XDG_RUNTIME_DIR=" + home, "NO_COLOR=1"}
		cmd.Dir = home
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 54321, Gid: 54321}}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		want := "cannot write " + dir + " (owned by root): run the update as root (`sudo " + filepath.Join(dir, "banger") + " update`); nothing was changed"
		if !errors.As(err, &ee) || ee.ExitCode() != cli.ExitFailure || !strings.Contains(errb.String(), want) {
			t.Fatalf("%v as uid 54321: %v, stderr %q; want %q", args, err, errb.String(), want)
		}
	}
	if after := treestate.Snapshot(t, dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused update changed the install")
	}
}

// Two updates at once: the second is refused at once, changing nothing.
func TestUpdateRefusesASecondUpdate(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	in, err := update.Locate(filepath.Join(e.dir, "banger"))
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := in.Lock()
	if err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, e.dir)
	for _, args := range [][]string{{"update", "--yes"}, {"update", "--rollback", "--yes"}} {
		if _, stderr, code := e.run(t, args...); code != cli.ExitFailure || !strings.Contains(stderr, "another `banger update` is running on "+e.dir+": wait for it to finish; nothing was changed") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused update changed the install")
	}
	unlock()
	if _, err := os.Lstat(filepath.Join(e.dir, update.LockFile)); !os.IsNotExist(err) {
		t.Errorf("the lock file outlived the update: %v", err)
	}
}

// A rollback over an update killed while linking says at once, without
// asking first, that there is nothing to roll back.
func TestUpdateRollbackAfterAKillWhileLinking(t *testing.T) {
	e := newUpdateEnv(t, filepath.Join(t.TempDir(), "bin"))
	markBinaries(t, e.dir, update.PrevSuffix, "old")
	j, _ := json.Marshal(update.Journal{From: "dev", To: "v0.0.2", State: update.StateLinking})
	if err := os.WriteFile(filepath.Join(e.dir, update.JournalFile), j, 0o644); err != nil {
		t.Fatal(err)
	}
	before := treestate.Snapshot(t, e.dir)
	// No --yes and no terminal: a question would be refused with "add --yes".
	if _, stderr, code := e.run(t, "update", "--rollback"); code != cli.ExitFailure || !strings.Contains(stderr, "had not replaced any binary yet, so there is nothing to roll back; run `banger update` again; nothing was changed") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if after := treestate.Snapshot(t, e.dir); !reflect.DeepEqual(before, after) {
		t.Fatal("a refused rollback changed the install")
	}
}
