package update

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeServices plays bangerd and the helper on the install's real files:
// a started bangerd or a restarted helper "runs" the version written in
// the bangerd binary at that moment. It records every change it is asked
// for, in order.
type fakeServices struct {
	in           *Install
	calls        []string
	daemon       string // version of the running bangerd; "" = none
	helper       string // version of the running helper; "" = not active
	failStart    map[string]bool
	answerAs     map[string]string // a started version that answers as another
	helperAnswer map[string]string
	crash        map[string]bool // a started version that answers once, then dies
	respawn      map[string]bool // ... and is started again by its unit
	strayHelper  string          // a helper that answers outside its unit
	others       []Proc          // other users' bangerds of the install
	pid          int             // of the running bangerd
	pidAsked     int             // DaemonPID calls since the last start
}

func (f *fakeServices) installed() string {
	b, _ := os.ReadFile(f.in.Path("bangerd"))
	v, _, _ := strings.Cut(string(b), " ")
	return v
}

func (f *fakeServices) DaemonRunning(context.Context) (bool, error) { return f.daemon != "", nil }
func (f *fakeServices) StopDaemon(context.Context) error {
	f.calls = append(f.calls, "stop bangerd "+f.daemon)
	f.daemon = ""
	return nil
}
func (f *fakeServices) OtherDaemons(context.Context) ([]Proc, error) { return f.others, nil }
func (f *fakeServices) DaemonPID(context.Context) (int, error) {
	if f.pidAsked++; f.pidAsked > 1 && f.respawn[f.daemon] {
		f.pid++
	}
	if f.pidAsked > 1 && f.crash[f.daemon] {
		f.daemon = ""
	}
	if f.daemon == "" {
		return 0, nil
	}
	return f.pid, nil
}
func (f *fakeServices) HelperActive(context.Context) (bool, error) { return f.helper != "", nil }
func (f *fakeServices) RestartHelper(context.Context) error {
	f.helper = f.installed()
	f.calls = append(f.calls, "restart helper "+f.helper)
	return nil
}
func (f *fakeServices) HelperVersion(context.Context) (string, error) {
	if f.helper == "" && f.strayHelper != "" {
		return f.strayHelper, nil
	}
	if f.helper == "" {
		return "", errors.New("dial helper.sock: connection refused")
	}
	if v, ok := f.helperAnswer[f.helper]; ok {
		return v, nil
	}
	return f.helper, nil
}
func (f *fakeServices) StartDaemon(context.Context) (string, error) {
	v := f.installed()
	f.calls = append(f.calls, "start bangerd "+v)
	if f.failStart[v] {
		return "", errors.New("bangerd exited during start: simulated")
	}
	f.daemon, f.pid, f.pidAsked = v, f.pid+1, 0
	if a, ok := f.answerAs[v]; ok {
		return a, nil
	}
	return v, nil
}

func TestApplyRestartOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		was   Running
		calls []string
	}{
		{"daemon and helper", Running{Daemon: true, Helper: true},
			[]string{"stop bangerd v1", "restart helper v2", "start bangerd v2"}},
		{"daemon only", Running{Daemon: true},
			[]string{"stop bangerd v1", "start bangerd v2"}},
		{"nothing ran: bangerd is started, checked and stopped", Running{},
			[]string{"start bangerd v2", "stop bangerd v2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstall(t, "v1")
			f := &fakeServices{in: in}
			if tc.was.Daemon {
				f.daemon = "v1"
			}
			if tc.was.Helper {
				f.helper = "v1"
			}
			was, err := Survey(context.Background(), f, 0, "sudo banger update")
			if err != nil || was != tc.was {
				t.Fatalf("Survey = %+v, %v", was, err)
			}
			if err := Apply(context.Background(), in, f, was, stage(t, in, "v2"), "v1", "v2"); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !reflect.DeepEqual(f.calls, tc.calls) {
				t.Errorf("calls %q, want %q", f.calls, tc.calls)
			}
			assertBinaries(t, in, "v2", "v1")
			if want := map[bool]string{true: "v2"}[tc.was.Daemon]; f.daemon != want {
				t.Errorf("running bangerd %q, want %q", f.daemon, want)
			}
			if j, _ := in.ReadJournal(); j.State != StateDone {
				t.Errorf("journal %+v, want done", j)
			}
		})
	}
}

func TestSurveyRefusesAHelperItCannotRestart(t *testing.T) {
	in := newInstall(t, "v1")
	f := &fakeServices{in: in, daemon: "v1", helper: "v1"}
	_, err := Survey(context.Background(), f, 1000, "sudo /opt/bin/banger update --yes")
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "run `sudo /opt/bin/banger update --yes`") {
		t.Fatalf("Survey as a user with the helper active: %v", err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("Survey changed something: %q", f.calls)
	}
}

func TestMain(m *testing.M) {
	DaemonSettle = 20 * time.Millisecond
	LockWait = 300 * time.Millisecond
	os.Exit(m.Run())
}

func TestSurveyRefusesAHelperRunningOutsideItsUnit(t *testing.T) {
	in := newInstall(t, "v1")
	f := &fakeServices{in: in, daemon: "v1", strayHelper: "v1"}
	_, err := Survey(context.Background(), f, 0, "sudo banger update")
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "a banger helper (version v1) answers, but banger-helper.service is not active") {
		t.Fatalf("Survey: %v", err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("Survey changed something: %q", f.calls)
	}
}

func TestSurveyRefusesWhenOtherUsersRunThisBangerd(t *testing.T) {
	in := newInstall(t, "v1")
	f := &fakeServices{in: in, daemon: "v1", helper: "v1", others: []Proc{{PID: 4242, UID: 54321}}}
	_, err := Survey(context.Background(), f, 0, "sudo banger update")
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "bangerd of this install also runs as uid 54321 (pid 4242): restarting banger-helper.service would leave it talking to a helper of another build") {
		t.Fatalf("Survey: %v", err)
	}
	// Without the helper there is nothing they could meet: no refusal.
	f = &fakeServices{in: in, daemon: "v1", others: []Proc{{PID: 4242, UID: 54321}}}
	if _, err := Survey(context.Background(), f, 0, "sudo banger update"); err != nil {
		t.Fatalf("Survey without the helper: %v", err)
	}
}

func TestApplyRollsBack(t *testing.T) {
	HelperTimeout = 600 * time.Millisecond
	t.Cleanup(func() { HelperTimeout = 20 * time.Second })
	for _, tc := range []struct {
		name  string
		was   Running
		setup func(f *fakeServices)
		want  string // in the error
		calls []string
		after string // the bangerd running at the end
	}{
		{"new bangerd exits at start", Running{Daemon: true, Helper: true},
			func(f *fakeServices) { f.failStart = map[string]bool{"v2": true} },
			"start bangerd: bangerd exited during start: simulated",
			[]string{"stop bangerd v1", "restart helper v2", "start bangerd v2", "restart helper v1", "start bangerd v1"}, "v1"},
		{"new bangerd answers as another version", Running{Daemon: true},
			func(f *fakeServices) { f.answerAs = map[string]string{"v2": "v1.9"} },
			"check bangerd: it answers as version v1.9, not v2",
			[]string{"stop bangerd v1", "start bangerd v2", "stop bangerd v2", "start bangerd v1"}, "v1"},
		{"helper answers as another version", Running{Daemon: true, Helper: true},
			func(f *fakeServices) { f.helperAnswer = map[string]string{"v2": "v0.9"} },
			"check banger-helper.service: no good answer within 600ms: it answers as version v0.9, not v2",
			[]string{"stop bangerd v1", "restart helper v2", "restart helper v1", "start bangerd v1"}, "v1"},
		{"new bangerd answers, then crashes a moment later", Running{Daemon: true, Helper: true},
			func(f *fakeServices) { f.crash = map[string]bool{"v2": true} },
			"check bangerd: it answered, then stopped answering within 20ms: it crashed after its start",
			[]string{"stop bangerd v1", "restart helper v2", "start bangerd v2", "restart helper v1", "start bangerd v1"}, "v1"},
		{"new bangerd crashes and its unit restarts it", Running{Daemon: true},
			func(f *fakeServices) { f.respawn = map[string]bool{"v2": true} },
			"check bangerd: it answered as pid 1, then as pid 2 within 20ms: it crashed and was restarted",
			[]string{"stop bangerd v1", "start bangerd v2", "stop bangerd v2", "start bangerd v1"}, "v1"},
		{"bangerd did not run before: it is not started after the rollback", Running{},
			func(f *fakeServices) { f.failStart = map[string]bool{"v2": true} },
			"start bangerd",
			[]string{"start bangerd v2"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstall(t, "v1")
			f := &fakeServices{in: in}
			if tc.was.Daemon {
				f.daemon = "v1"
			}
			if tc.was.Helper {
				f.helper = "v1"
			}
			tc.setup(f)
			err := Apply(context.Background(), in, f, tc.was, stage(t, in, "v2"), "v1", "v2")
			var fe *FailedError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.want) || fe.RollbackErr != nil || fe.RestartErr != nil {
				t.Fatalf("Apply: %v, want a rolled-back failure saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "the update to v2 did not come up, so v1 was put back and runs as before; what failed: ") {
				t.Errorf("error does not say v1 is back: %v", err)
			}
			if !reflect.DeepEqual(f.calls, tc.calls) {
				t.Errorf("calls %q, want %q", f.calls, tc.calls)
			}
			assertBinaries(t, in, "v1", "")
			if f.daemon != tc.after {
				t.Errorf("running bangerd %q, want %q", f.daemon, tc.after)
			}
			if j, _ := in.ReadJournal(); j.State != StateRolledBack {
				t.Errorf("journal %+v, want rolled back", j)
			}
		})
	}
}

func TestApplyReportsAFailedRestartOfTheOldVersion(t *testing.T) {
	in := newInstall(t, "v1")
	f := &fakeServices{in: in, daemon: "v1", failStart: map[string]bool{"v2": true, "v1": true}}
	err := Apply(context.Background(), in, f, Running{Daemon: true}, stage(t, in, "v2"), "v1", "v2")
	var fe *FailedError
	if !errors.As(err, &fe) || fe.RestartErr == nil || !strings.Contains(err.Error(), "the binaries of v1 are back, but bringing them up failed") || !strings.Contains(err.Error(), "run `banger update --rollback` to bring them up") {
		t.Fatalf("Apply: %v", err)
	}
	assertBinaries(t, in, "v1", "")
	// The journal says they still need bringing up (a rollback does that).
	if j, _ := in.ReadJournal(); j.State != StateRestored {
		t.Errorf("journal %+v, want restored", j)
	}
}

func TestRestartAfterAManualRollback(t *testing.T) {
	in := newInstall(t, "v1")
	f := &fakeServices{in: in, daemon: "v1", helper: "v1"}
	if err := Apply(context.Background(), in, f, Running{Daemon: true, Helper: true}, stage(t, in, "v2"), "v1", "v2"); err != nil {
		t.Fatal(err)
	}
	f.calls = nil
	from, err := in.RestorePrev()
	if err != nil || from != "v1" {
		t.Fatalf("RestorePrev = %q, %v", from, err)
	}
	if err := BringUp(context.Background(), f, Running{Daemon: true, Helper: true}, from); err != nil {
		t.Fatal(err)
	}
	want := []string{"stop bangerd v2", "restart helper v1", "start bangerd v1"}
	if !reflect.DeepEqual(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
}

// A swap that fails while making the .prev links (a full disk for the
// copy, here a .prev that cannot be replaced) replaced nothing: the error
// says so, and nothing is restarted.
func TestApplyThatStopsWhileLinkingSaysNothingWasReplaced(t *testing.T) {
	in := newInstall(t, "v1")
	if err := os.MkdirAll(filepath.Join(in.Prev("bangerd"), "busy"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fakeServices{in: in, daemon: "v1", helper: "v1"}
	err := Apply(context.Background(), in, f, Running{Daemon: true, Helper: true}, stage(t, in, "v2"), "v1", "v2")
	var fe *FailedError
	if !errors.As(err, &fe) || !fe.NotSwapped || !strings.Contains(err.Error(), "stopped before it replaced any binary, so v1 is untouched and nothing was restarted") {
		t.Fatalf("Apply: %v", err)
	}
	if len(f.calls) != 0 {
		t.Errorf("calls %q, want none", f.calls)
	}
	for _, n := range Binaries {
		if got := read(t, in.Path(n)); got != "v1 "+n {
			t.Errorf("%s = %q", n, got)
		}
	}
	if err := in.Interrupted(); err != nil {
		t.Errorf("a new update is blocked: %v", err)
	}
}

// A swap that fails half way restarted nothing yet: the old binaries go
// back and nothing is stopped or restarted.
func TestApplyThatStopsWhileSwappingRestartsNothing(t *testing.T) {
	in := newInstall(t, "v1")
	n := 0
	rename = func(a, b string) error {
		if n++; n == 2 {
			return &os.LinkError{Op: "rename", Old: a, New: b, Err: syscall.ENOSPC}
		}
		return os.Rename(a, b)
	}
	t.Cleanup(func() { rename = os.Rename })
	f := &fakeServices{in: in, daemon: "v1", helper: "v1"}
	err := Apply(context.Background(), in, f, Running{Daemon: true, Helper: true}, stage(t, in, "v2"), "v1", "v2")
	var fe *FailedError
	if !errors.As(err, &fe) || !fe.SwapFailed || fe.RollbackErr != nil || !strings.Contains(err.Error(), "stopped while replacing the binaries, so those of v1 were put back and nothing was restarted") {
		t.Fatalf("Apply: %v", err)
	}
	if len(f.calls) != 0 {
		t.Errorf("calls %q, want none", f.calls)
	}
	assertBinaries(t, in, "v1", "")
}

// cancelOnStart cancels the update's context when the new bangerd starts,
// as a Ctrl-C in the middle of the restart does.
type cancelOnStart struct {
	*fakeServices
	cancel context.CancelFunc
}

func (c *cancelOnStart) StartDaemon(ctx context.Context) (string, error) {
	if c.installed() == "v2" {
		c.cancel()
		c.calls = append(c.calls, "start bangerd v2")
		return "", ctx.Err()
	}
	return c.fakeServices.StartDaemon(ctx)
}

func TestApplyInterruptedWhileBringingUpPutsTheOldVersionBack(t *testing.T) {
	in := newInstall(t, "v1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &cancelOnStart{&fakeServices{in: in, daemon: "v1", helper: "v1"}, cancel}
	err := Apply(ctx, in, f, Running{Daemon: true, Helper: true}, stage(t, in, "v2"), "v1", "v2")
	var fe *FailedError
	if !errors.As(err, &fe) || !fe.Interrupted || fe.RestartErr != nil || !strings.Contains(err.Error(), "was interrupted while it was being brought up, so v1 was put back and runs as before") {
		t.Fatalf("Apply: %v", err)
	}
	want := []string{"stop bangerd v1", "restart helper v2", "start bangerd v2", "restart helper v1", "start bangerd v1"}
	if !reflect.DeepEqual(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	assertBinaries(t, in, "v1", "")
	if f.daemon != "v1" {
		t.Errorf("running bangerd %q", f.daemon)
	}
}

// An update killed after its swap (journal "swapped") is finished by
// Resume: the new version is brought up and the journal marked done; and
// rolled back when it does not come up.
func TestResumeAfterAKillAfterTheSwap(t *testing.T) {
	for _, fail := range []bool{false, true} {
		in := newInstall(t, "v1")
		if err := in.Swap(stage(t, in, "v2"), "v1", "v2"); err != nil {
			t.Fatal(err)
		}
		// Killed after stopping the old bangerd: nothing answers now.
		f := &fakeServices{in: in, helper: "v1"}
		if fail {
			f.failStart = map[string]bool{"v2": true}
		}
		was, err := Survey(context.Background(), f, 0, "sudo banger update")
		if err != nil {
			t.Fatal(err)
		}
		err = Resume(context.Background(), in, f, was)
		j, _ := in.ReadJournal()
		switch {
		case !fail && (err != nil || j.State != StateDone || f.helper != "v2"):
			t.Errorf("Resume: %v, journal %+v, helper %q", err, j, f.helper)
		case !fail:
			assertBinaries(t, in, "v2", "v1")
		case fail && (err == nil || j.State != StateRolledBack || f.helper != "v1"):
			t.Errorf("failing Resume: %v, journal %+v, helper %q", err, j, f.helper)
		case fail:
			assertBinaries(t, in, "v1", "")
		}
		if err := Resume(context.Background(), in, f, was); err == nil || !strings.Contains(err.Error(), "no update of") {
			t.Errorf("second Resume: %v", err)
		}
	}
}

// On a full filesystem (a real tmpfs, filled) the first journal write
// fails: nothing was replaced, and the error says so instead of claiming
// a rollback.
func TestApplyOnAFullFilesystemChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	dir := filepath.Join(mnt, "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range Binaries {
		writeBin(t, filepath.Join(dir, n), "v1 "+n)
	}
	in, err := Locate(filepath.Join(dir, "banger"))
	if err != nil {
		t.Fatal(err)
	}
	staged := stage(t, in, "v2")
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Close()
	f := &fakeServices{in: in, daemon: "v1", helper: "v1"}
	err = Apply(context.Background(), in, f, Running{Daemon: true, Helper: true}, staged, "v1", "v2")
	var fe *FailedError
	if !errors.As(err, &fe) || !fe.NotSwapped || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "stopped before it replaced any binary") {
		t.Fatalf("Apply on a full disk: %v", err)
	}
	if len(f.calls) != 0 {
		t.Errorf("calls %q, want none", f.calls)
	}
	assertBinaries(t, in, "v1", "")
	if j, err := in.ReadJournal(); err != nil || j.State != "" {
		t.Errorf("journal %+v, %v", j, err)
	}
}
