package daemon_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/opstate"
	"banger/internal/rpc"
	"banger/internal/store"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep the runtime dir short.
	run, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	return config.Config{StateDir: filepath.Join(t.TempDir(), "state"), RuntimeDir: run, LogLevel: "debug"}
}

type running struct {
	cfg    config.Config
	info   rpc.VersionInfo
	client *rpc.Client
	cancel context.CancelFunc
	done   chan error
}

// start runs a daemon in-process and waits until it serves.
func start(t *testing.T, cfg config.Config, kinds map[string]opstate.Func) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan rpc.VersionInfo, 1)
	r := &running{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- daemon.Run(ctx, daemon.Options{
			Config: cfg, Stderr: io.Discard, DirectKinds: kinds,
			OnReady: func(v rpc.VersionInfo) { ready <- v },
		})
	}()
	select {
	case r.info = <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("daemon exited during start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("daemon did not become ready")
	}
	r.client = rpc.NewClient(r.info.Socket)
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	return nil
}

func TestServesVersionOnPrivateSocket(t *testing.T) {
	r := start(t, testConfig(t), nil)
	v, err := r.client.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v.PID != os.Getpid() || v.StateDir != r.cfg.StateDir || v.API < 1 {
		t.Fatalf("version = %+v", v)
	}
	fi, err := os.Stat(v.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode = %v, want a 0600 socket", fi.Mode())
	}
	pid, _ := os.ReadFile(filepath.Join(r.cfg.StateDir, "bangerd.lock"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, want our pid", pid)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
	if _, err := os.Stat(v.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after stop: %v", err)
	}
	logData, _ := os.ReadFile(filepath.Join(r.cfg.StateDir, "bangerd.log"))
	if !strings.Contains(string(logData), "bangerd ready") || !strings.Contains(string(logData), "bangerd stopped") {
		t.Fatalf("log lacks start/stop records:\n%s", logData)
	}
}

func TestSecondDaemonOnSameStateDirIsRefused(t *testing.T) {
	cfg := testConfig(t)
	start(t, cfg, nil)
	cfg2 := cfg
	cfg2.RuntimeDir = filepath.Join(t.TempDir(), "other")
	err := daemon.Run(context.Background(), daemon.Options{Config: cfg2, Stderr: io.Discard})
	var le *daemon.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second Run = %v, want *LockedError", err)
	}
	if le.PID != os.Getpid() || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("error %q does not name the holder's pid", err)
	}
}

func TestLiveSocketOfAnotherStateDirIsRefused(t *testing.T) {
	cfg := testConfig(t)
	start(t, cfg, nil)
	cfg2 := cfg
	cfg2.StateDir = filepath.Join(t.TempDir(), "state2")
	err := daemon.Run(context.Background(), daemon.Options{Config: cfg2, Stderr: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "in use by another bangerd") {
		t.Fatalf("Run on a live socket = %v", err)
	}
}

// A daemon of another state dir given the same runtime dir (and its own
// socket) must not touch the run dirs there: they belong to the running
// daemon's VMs, whose VMMs name them on their command lines.
func TestSharedRuntimeDirLeavesTheOtherDaemonsVMsAlone(t *testing.T) {
	cfg := testConfig(t)
	start(t, cfg, nil)
	runDir := filepath.Join(cfg.RuntimeDir, "vms", "0a1b2c3d4e5f6071")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, "console.log"), []byte("boot"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Stands in for the running VM's VMM: its command line names its run dir.
	vmm := exec.Command("sh", "-c", "sleep 60; :", "vmm", filepath.Join(runDir, "api.sock"))
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = vmm.Wait(); close(exited) }()
	t.Cleanup(func() { _ = vmm.Process.Kill(); <-exited })

	cfg2 := cfg
	cfg2.StateDir = filepath.Join(t.TempDir(), "state2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := daemon.Run(ctx, daemon.Options{Config: cfg2, Stderr: io.Discard,
		Socket: filepath.Join(cfg.RuntimeDir, "b.sock")})
	select {
	case <-exited:
		t.Fatalf("the other daemon's VMM was killed: %v", vmm.ProcessState)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := os.Stat(filepath.Join(runDir, "console.log")); err != nil {
		t.Fatalf("the other daemon's VM run dir was removed: %v", err)
	}
	var le *daemon.LockedError
	if !errors.As(err, &le) || le.RuntimeDir != cfg.RuntimeDir || !strings.Contains(err.Error(), "runtime_dir") {
		t.Fatalf("Run on a runtime dir in use = %v, want a *LockedError naming it", err)
	}
}

// A runtime dir that is the state dir itself is one lock, not a conflict.
func TestRuntimeDirSameAsStateDir(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateDir = cfg.RuntimeDir
	r := start(t, cfg, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	cfg := testConfig(t)
	sock := daemon.SocketPath(cfg)
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg, nil)
	if _, err := r.client.Version(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAPIVersionMismatchIsRefused(t *testing.T) {
	r := start(t, testConfig(t), nil)
	_, err := r.client.WithAPIVersion(99).Version(context.Background())
	if !rpc.IsCode(err, rpc.CodeAPIMismatch) {
		t.Fatalf("err = %v, want api_version_mismatch", err)
	}
	if !strings.Contains(err.Error(), "banger daemon restart") || !strings.Contains(err.Error(), "99") {
		t.Fatalf("error %q should name the versions and the fix", err)
	}
}

func TestShutdownRequest(t *testing.T) {
	r := start(t, testConfig(t), nil)
	if err := r.client.Do(context.Background(), "POST", "/v1/daemon/shutdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		close(r.done)
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop on request")
	}
}

// stepKind is an operation that walks through n items, each released by a
// send on step (or all at once when step is nil), and honours cancellation.
func stepKind(n int64, step <-chan struct{}) opstate.Func {
	return func(ctx context.Context, p *opstate.Progress) error {
		p.Phase("stepping")
		p.SetTotal(n, "items")
		for i := int64(0); i < n; i++ {
			if step != nil {
				select {
				case <-step:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			p.Add(1)
		}
		return nil
	}
}

func startOp(t *testing.T, c *rpc.Client, kind string) rpc.Operation {
	t.Helper()
	var op rpc.Operation
	if err := c.Do(context.Background(), "POST", "/v1/ops", rpc.StartOperationRequest{Kind: kind, Target: "t"}, &op); err != nil {
		t.Fatal(err)
	}
	return op
}

func watch(t *testing.T, c *rpc.Client, id string, each func(rpc.Operation)) rpc.Operation {
	t.Helper()
	var last rpc.Operation
	err := c.Stream(context.Background(), "GET", "/v1/ops/"+id+"/watch", nil, func(raw json.RawMessage) error {
		if err := json.Unmarshal(raw, &last); err != nil {
			return err
		}
		if each != nil {
			each(last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func TestOperationProgressOverAPI(t *testing.T) {
	step := make(chan struct{})
	r := start(t, testConfig(t), map[string]opstate.Func{"step": stepKind(3, step)})
	op := startOp(t, r.client, "step")
	var seen []int64
	var once sync.Once
	final := watch(t, r.client, op.ID, func(o rpc.Operation) {
		if o.State == rpc.StateRunning && o.Total == 3 {
			seen = append(seen, o.Done)
			if o.Done < 3 {
				go func() { step <- struct{}{} }()
			}
		}
		once.Do(func() {})
	})
	if final.State != rpc.StateSucceeded || final.Done != 3 {
		t.Fatalf("final = %+v", final)
	}
	if len(seen) < 2 {
		t.Fatalf("saw progress %v, want several updates", seen)
	}
	var got rpc.Operation
	if err := r.client.Do(context.Background(), "GET", "/v1/ops/"+op.ID, nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != rpc.StateSucceeded {
		t.Fatalf("GET op = %+v", got)
	}
	var list []rpc.Operation
	if err := r.client.Do(context.Background(), "GET", "/v1/ops?limit=5", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != op.ID {
		t.Fatalf("list = %+v", list)
	}
}

func TestCancelOverAPI(t *testing.T) {
	r := start(t, testConfig(t), map[string]opstate.Func{"block": stepKind(1, make(chan struct{}))})
	op := startOp(t, r.client, "block")
	final := watch(t, r.client, op.ID, func(o rpc.Operation) {
		if o.State == rpc.StateRunning && o.Phase == "stepping" {
			if err := r.client.Do(context.Background(), "POST", "/v1/ops/"+op.ID+"/cancel", nil, nil); err != nil {
				t.Error(err)
			}
		}
	})
	if final.State != rpc.StateCancelled {
		t.Fatalf("final = %+v, want cancelled", final)
	}
}

func TestUnknownOperationAndKind(t *testing.T) {
	r := start(t, testConfig(t), nil)
	err := r.client.Do(context.Background(), "GET", "/v1/ops/op-missing", nil, nil)
	if !rpc.IsCode(err, rpc.CodeNotFound) {
		t.Fatalf("GET missing op = %v, want not_found", err)
	}
	err = r.client.Do(context.Background(), "POST", "/v1/ops", rpc.StartOperationRequest{Kind: "nope"}, nil)
	if !rpc.IsCode(err, rpc.CodeBadRequest) {
		t.Fatalf("unknown kind = %v, want bad_request", err)
	}
}

func TestShutdownCancelsRunningOperation(t *testing.T) {
	cfg := testConfig(t)
	r := start(t, cfg, map[string]opstate.Func{"block": stepKind(1, make(chan struct{}))})
	op := startOp(t, r.client, "block")
	// Wait until it runs.
	for {
		var o rpc.Operation
		if err := r.client.Do(context.Background(), "GET", "/v1/ops/"+op.ID, nil, &o); err != nil {
			t.Fatal(err)
		}
		if o.State == rpc.StateRunning {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.GetOperation(context.Background(), op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.StateCancelled || got.Error != opstate.ShutdownReason {
		t.Fatalf("after shutdown op = %+v", got)
	}
}

func TestStartMarksInterruptedOperationsFailed(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := st.PutOperation(context.Background(), store.Operation{ID: "op-dead", Kind: "pull", State: store.StateRunning, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := start(t, cfg, nil)
	var got rpc.Operation
	if err := r.client.Do(context.Background(), "GET", "/v1/ops/op-dead", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != rpc.StateFailed || got.Error != opstate.CrashReason {
		t.Fatalf("interrupted op = %+v, want failed with the crash reason", got)
	}
}

func TestNewerStoreIsRefused(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	bumpSchema(t, daemon.StorePath(cfg), store.SchemaVersion+1)
	err = daemon.Run(context.Background(), daemon.Options{Config: cfg, Stderr: io.Discard})
	var tn *store.TooNewError
	if !errors.As(err, &tn) {
		t.Fatalf("Run on a newer store = %v, want *store.TooNewError", err)
	}
}

func bumpSchema(t *testing.T, path string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, v); err != nil {
		t.Fatal(err)
	}
}

func TestNotifiesSystemdWhenReady(t *testing.T) {
	cfg := testConfig(t)
	path := filepath.Join(cfg.RuntimeDir, "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	r := start(t, cfg, nil)
	buf := make([]byte, 64)
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := pc.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("first notification = %q, %v; want READY=1", buf[:n], err)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	n, err = pc.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Fatalf("second notification = %q, %v; want STOPPING=1", buf[:n], err)
	}
}
