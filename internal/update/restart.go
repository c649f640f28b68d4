package update

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// userName names uid, or says "uid N".
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return "user " + u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// Services is what an update restarts. The CLI implements it with its
// daemon control (rpc) and systemctl; tests record the calls.
type Services interface {
	// DaemonRunning reports whether the user's bangerd answers.
	DaemonRunning(ctx context.Context) (bool, error)
	// StopDaemon stops the running bangerd and waits until it is gone.
	// Running VMs keep running; the next bangerd re-adopts them.
	StopDaemon(ctx context.Context) error
	// HelperActive reports whether the root helper (the systemd system
	// unit banger-helper) is active.
	HelperActive(ctx context.Context) (bool, error)
	// RestartHelper restarts the helper's unit; it needs root.
	RestartHelper(ctx context.Context) error
	// HelperVersion asks the helper's hello and returns its build version.
	HelperVersion(ctx context.Context) (string, error)
	// StartDaemon starts the install's bangerd and returns the version it
	// answers its health check (the Version call) with.
	StartDaemon(ctx context.Context) (string, error)
	// DaemonPID returns the pid of the bangerd that answers now, 0 when
	// none does.
	DaemonPID(ctx context.Context) (int, error)
	// OtherDaemons lists the bangerds of the install that the update does
	// not restart: run by users other than the one whose bangerd it
	// restarts, and other than root (whose bangerd needs no helper).
	OtherDaemons(ctx context.Context) ([]Proc, error)
}

// Bounds of the health checks after a restart.
var (
	HelperTimeout = 20 * time.Second
	DaemonTimeout = 20 * time.Second
	pollInterval  = 200 * time.Millisecond
	// DaemonSettle is how long a bangerd that answered its health check
	// must keep answering, from the same process, to count as up: one
	// that crashes just after its first answer (while re-adopting VMs,
	// say), or that its unit restarts, fails the check.
	DaemonSettle = 3 * time.Second
)

// Running is what ran before an update: it decides what is restarted.
type Running struct {
	Daemon bool // the user's bangerd answered
	Helper bool // banger-helper.service was active
}

// Survey records what runs, and refuses (before anything is changed) when
// the helper runs and this process, not root (euid), could not restart it.
func Survey(ctx context.Context, svc Services, euid int, sudoCmd string) (Running, error) {
	var r Running
	var err error
	if r.Helper, err = svc.HelperActive(ctx); err != nil {
		return r, fmt.Errorf("ask whether banger-helper.service runs: %w", err)
	}
	if r.Helper && euid != 0 {
		return r, refused("banger-helper.service runs and must be restarted on the new bangerd, which needs root: run `%s`", sudoCmd)
	}
	if r.Helper {
		// Restarting the helper would leave another user's bangerd, still
		// the old build, talking to a helper of the new one.
		others, err := svc.OtherDaemons(ctx)
		if err != nil {
			return r, fmt.Errorf("look for other users' bangerd: %w", err)
		}
		if len(others) > 0 {
			var who []string
			for _, p := range others {
				who = append(who, fmt.Sprintf("%s (pid %d)", userName(p.UID), p.PID))
			}
			return r, refused("bangerd of this install also runs as %s: restarting banger-helper.service would leave it talking to a helper of another build; have it stopped first (`banger daemon stop` as that user; its VMs keep running), then update", strings.Join(who, ", "))
		}
	}
	if !r.Helper {
		// A helper that answers while its unit is not active was started
		// some other way: the update cannot restart it, and the new
		// bangerd would meet a helper of the old build.
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := svc.HelperVersion(hctx)
		cancel()
		if err == nil {
			return r, refused("a banger helper (version %s) answers, but banger-helper.service is not active: it was started outside systemd, so the update could not restart it on the new version; stop it, or run it as banger-helper.service, then update again", v)
		}
	}
	if r.Daemon, err = svc.DaemonRunning(ctx); err != nil {
		return r, fmt.Errorf("ask whether bangerd runs: %w", err)
	}
	return r, nil
}

// StepError says which step of a restart failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Restart brings up the install's binaries in the one order that never
// leaves a bangerd talking to a helper of another protocol:
//
//  1. stop bangerd, if it answers (its VMs keep running);
//  2. restart the helper, if it was active, and wait until its hello
//     answers with version want;
//  3. start bangerd, if startDaemon, and wait until it answers its health
//     check with version want.
//
// want "" accepts any version (a rollback to a version the journal does
// not know).
func Restart(ctx context.Context, svc Services, was Running, want string, startDaemon bool) error {
	up, err := svc.DaemonRunning(ctx)
	if err != nil {
		return &StepError{"ask whether bangerd runs", err}
	}
	if up {
		if err := svc.StopDaemon(ctx); err != nil {
			return &StepError{"stop bangerd", err}
		}
	}
	if was.Helper {
		if err := svc.RestartHelper(ctx); err != nil {
			return &StepError{"restart banger-helper.service", err}
		}
		if err := waitHelper(ctx, svc, want); err != nil {
			return &StepError{"check banger-helper.service", err}
		}
	}
	if !startDaemon {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, DaemonTimeout)
	defer cancel()
	got, err := svc.StartDaemon(dctx)
	if err != nil {
		return &StepError{"start bangerd", err}
	}
	if want != "" && got != want {
		return &StepError{"check bangerd", fmt.Errorf("it answers as version %s, not %s", got, want)}
	}
	if err := settle(ctx, svc); err != nil {
		return &StepError{"check bangerd", err}
	}
	return nil
}

// settle checks that the bangerd that just answered still answers, from
// the same process, DaemonSettle later.
func settle(ctx context.Context, svc Services) error {
	first, err := svc.DaemonPID(ctx)
	if err != nil {
		return err
	}
	if first == 0 {
		return errors.New("it answered once, then stopped answering: it crashed at start")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(DaemonSettle):
	}
	now, err := svc.DaemonPID(ctx)
	switch {
	case err != nil:
		return err
	case now == 0:
		return fmt.Errorf("it answered, then stopped answering within %s: it crashed after its start", DaemonSettle)
	case now != first:
		return fmt.Errorf("it answered as pid %d, then as pid %d within %s: it crashed and was restarted", first, now, DaemonSettle)
	}
	return nil
}

// waitHelper polls the helper's hello until it answers with version want,
// within HelperTimeout.
func waitHelper(ctx context.Context, svc Services, want string) error {
	ctx, cancel := context.WithTimeout(ctx, HelperTimeout)
	defer cancel()
	var last error
	for {
		got, err := svc.HelperVersion(ctx)
		switch {
		case err == nil && (want == "" || got == want):
			return nil
		case err == nil:
			last = fmt.Errorf("it answers as version %s, not %s (does its unit run the bangerd of this install?)", got, want)
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("no good answer within %s: %w", HelperTimeout, last)
			}
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// FailedError is an update that did not come up and was rolled back (or
// could not be: RollbackErr, RestartErr).
type FailedError struct {
	From, To    string
	Err         error // what failed with the new version
	RollbackErr error // putting the .prev binaries back
	RestartErr  error // bringing the old version up again
	// NotSwapped: the update stopped before it replaced any binary, so
	// nothing was put back or restarted.
	NotSwapped bool
	// SwapFailed: the update stopped while replacing the binaries, before
	// it restarted anything; the old binaries were put back.
	SwapFailed bool
	// Interrupted: a signal (Ctrl-C, SIGTERM) stopped the update while the
	// new version was being brought up.
	Interrupted bool
}

func (e *FailedError) Error() string {
	// What failed goes last: it may end with the daemon log's tail.
	from := orUnknown(e.From)
	switch {
	case e.NotSwapped:
		return fmt.Sprintf("the update to %s stopped before it replaced any binary, so %s is untouched and nothing was restarted; what failed: %v", e.To, from, e.Err)
	case e.RollbackErr != nil:
		return fmt.Sprintf("the update to %s did not come up, and putting %s back failed too (%v): run `banger update --rollback`; what failed: %v", e.To, from, e.RollbackErr, e.Err)
	case e.SwapFailed:
		return fmt.Sprintf("the update to %s stopped while replacing the binaries, so those of %s were put back and nothing was restarted; what failed: %v", e.To, from, e.Err)
	case e.RestartErr != nil:
		return fmt.Sprintf("the update to %s did not come up; the binaries of %s are back, but bringing them up failed (%v): fix that, then run `banger update --rollback` to bring them up; what failed: %v", e.To, from, e.RestartErr, e.Err)
	case e.Interrupted:
		return fmt.Sprintf("the update to %s was interrupted while it was being brought up, so %s was put back and runs as before; it stopped at: %v", e.To, from, e.Err)
	}
	return fmt.Sprintf("the update to %s did not come up, so %s was put back and runs as before; what failed: %v", e.To, from, e.Err)
}

func (e *FailedError) Unwrap() error { return e.Err }

// BringUp restarts what ran (see Restart) on the install's binaries of
// version want, and checks bangerd even when it did not run: it is started,
// must answer with version want, and is stopped again, so that what did
// not run before does not run after.
func BringUp(ctx context.Context, svc Services, was Running, want string) error {
	if err := Restart(ctx, svc, was, want, true); err != nil {
		return err
	}
	if !was.Daemon {
		if err := svc.StopDaemon(ctx); err != nil {
			return &StepError{"stop the bangerd started for its check", err}
		}
	}
	return nil
}

// Apply swaps the staged binaries in and brings them up (BringUp). When
// the swap or a step of BringUp fails, the .prev binaries are put back,
// what ran before is brought up again in the same order (when anything
// had been restarted), and the error is a *FailedError.
func Apply(ctx context.Context, in *Install, svc Services, was Running, staged map[string]string, from, to string) error {
	if err := in.Swap(staged, from, to); err != nil {
		fe := &FailedError{From: from, To: to, Err: err}
		var ns *notSwappedError
		if errors.As(err, &ns) {
			// No binary was replaced; but a journal write that failed
			// after it was committed may say "swapping": then the
			// rollback below clears it.
			if j, jerr := in.ReadJournal(); jerr != nil || j.State != StateSwapping {
				fe.NotSwapped = true
				return fe
			}
		}
		// Nothing was stopped or restarted yet: the old binaries back in
		// place is the state before the update.
		fe.SwapFailed = true
		if _, fe.RollbackErr = in.RestorePrev(); fe.RollbackErr == nil {
			fe.RollbackErr = in.MarkRolledBack()
		}
		return fe
	}
	return finish(ctx, in, svc, was, from, to)
}

// Resume finishes an update that was interrupted (a SIGKILL, a power
// loss) after its swap: the journal says StateSwapped, every binary is the
// new version. It brings them up as Apply does, and rolls back the same
// way when they do not come up.
func Resume(ctx context.Context, in *Install, svc Services, was Running) error {
	j, err := in.ReadJournal()
	if err != nil {
		return err
	}
	if j.State != StateSwapped {
		return refused("no update of %s is waiting to be brought up (the journal says %q)", in.Dir, j.State)
	}
	return finish(ctx, in, svc, was, j.From, j.To)
}

// finish brings up the swapped binaries of version to and marks the
// update done, or puts the .prev binaries (from) back and brings them up.
func finish(ctx context.Context, in *Install, svc Services, was Running, from, to string) error {
	err := BringUp(ctx, svc, was, to)
	if err == nil {
		return in.MarkDone(from, to)
	}
	fe := &FailedError{From: from, To: to, Err: err, Interrupted: ctx.Err() != nil}
	// The rollback must run even when ctx was cancelled (Ctrl-C) after
	// the swap: give it a context of its own, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HelperTimeout+DaemonTimeout+DaemonSettle+30*time.Second)
	defer cancel()
	if _, fe.RollbackErr = in.RestorePrev(); fe.RollbackErr != nil {
		return fe
	}
	if fe.RestartErr = Restart(rctx, svc, was, from, was.Daemon); fe.RestartErr == nil {
		_ = in.MarkRolledBack() // "restored" is as safe: a rollback brings it up again
	}
	return fe
}
