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
	"banger/internal/daemon/workspace"
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

// vmOnDisk is a VM's directory with a disk holding data the user cares
// about.
type vmOnDisk struct {
	dir, disk string
}

const guestData = "the guest's files"

// installWithVM makes what a daemon leaves behind: a store and state dir
// tied together (one daemon start), and a stopped VM with its row and its
// directory.
func installWithVM(t *testing.T, cfg config.Config) vmOnDisk {
	t.Helper()
	r := start(t, cfg, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	putVM(t, st, "0a1b2c3d4e5f6071")
	return vmDir(t, cfg, "0a1b2c3d4e5f6071")
}

// putVM records a stopped VM, named "precious" unless name says otherwise.
func putVM(t *testing.T, st *store.Store, id string, name ...string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := st.GetKernel(ctx, "k1"); err != nil {
		if err := st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "k1", VmlinuxPath: "/nonexistent/vmlinux", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutImage(ctx, store.Image{ID: "i1", Name: "i1", RootfsPath: "/nonexistent/rootfs.ext4", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	vmName := "precious"
	if len(name) > 0 {
		vmName = name[0]
	}
	if err := st.PutVM(ctx, store.VM{ID: id, Name: vmName, ImageID: "i1", KernelID: "k1", VCPUs: 1, MemoryBytes: 1 << 30,
		DiskBytes: 1 << 30, State: store.VMStopped, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
}

func vmDir(t *testing.T, cfg config.Config, id string) vmOnDisk {
	t.Helper()
	dir := filepath.Join(cfg.StateDir, "vms", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "root.ext4")
	if err := os.WriteFile(disk, []byte(guestData), 0o600); err != nil {
		t.Fatal(err)
	}
	return vmOnDisk{dir: dir, disk: disk}
}

// intact fails the test unless the VM's disk is where it was, unchanged.
func (v vmOnDisk) intact(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(v.disk); err != nil || string(b) != guestData {
		t.Fatalf("the VM's disk %s is gone or changed: %q, %v", v.disk, b, err)
	}
}

// orphaned returns where the VM's directory was moved aside to.
func (v vmOnDisk) orphaned(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(v.dir), ".orphaned-"+filepath.Base(v.dir)+"-*"))
	if len(m) != 1 {
		t.Fatalf("the VM's directory was not moved aside once: %v", m)
	}
	if b, err := os.ReadFile(filepath.Join(m[0], "root.ext4")); err != nil || string(b) != guestData {
		t.Fatalf("the VM's disk moved aside is gone or changed: %q, %v", b, err)
	}
	return m[0]
}

func runOnce(cfg config.Config, adopt bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Stderr: io.Discard, AdoptStore: adopt,
			OnReady: func(rpc.VersionInfo) { close(ready) }})
	}()
	select {
	case err := <-done:
		return err
	case <-ready:
		cancel()
		return <-done
	}
}

func wantIdentityError(t *testing.T, err error, says string) {
	t.Helper()
	var ie *store.IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("Run = %v, want a *store.IdentityError", err)
	}
	for _, w := range []string{says, "--adopt-store", "Nothing was changed"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestEmptiedStoreDeletesNoVM(t *testing.T) {
	for _, how := range []string{"truncated", "deleted"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			vm := installWithVM(t, cfg)
			path := daemon.StorePath(cfg)
			var err error
			if how == "truncated" {
				err = os.Truncate(path, 0)
			} else {
				err = os.Remove(path)
			}
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // refused every time, not only the first
				wantIdentityError(t, runOnce(cfg, false), "the store is empty")
				vm.intact(t)
			}
			// Adopting the empty store moves the VM aside, never deletes it.
			if err := runOnce(cfg, true); err != nil {
				t.Fatalf("Run --adopt-store: %v", err)
			}
			vm.orphaned(t)
			if err := runOnce(cfg, false); err != nil {
				t.Fatalf("Run after adopting: %v", err)
			}
			vm.orphaned(t)
		})
	}
}

func TestStoreFromAnotherStateDirIsRefused(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	other := testConfig(t)
	r := start(t, other, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(daemon.StorePath(other))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(daemon.StorePath(cfg), data, 0o600); err != nil {
		t.Fatal(err)
	}
	wantIdentityError(t, runOnce(cfg, false), "the store records state dir id")
	vm.intact(t)
}

func TestVMDirWithoutRowIsMovedAside(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	stray := vmDir(t, cfg, "ffeeddccbbaa9988")
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	vm.intact(t)
	stray.orphaned(t)
	// A create cut short before its row was recorded is deleted; a create
	// cut short after it is kept and committed.
	ws := workspace.New(cfg.StateDir)
	cut, err := ws.Create("1122334455667788")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Create("0a1b2c3d4e5f6072"); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "0a1b2c3d4e5f6072", "second")
	st.Close()
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	if ws.Uncommitted("0a1b2c3d4e5f6072") {
		t.Error("a VM with a row is still marked uncommitted")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "vms", "0a1b2c3d4e5f6072")); err != nil {
		t.Errorf("the directory of a VM with a row: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.StateDir, "vms", "*1122334455667788*")); len(m) != 0 {
		t.Errorf("a create cut short before its row left %v (was %s)", m, cut)
	}
	// A removal's trash is still deleted.
	trash := filepath.Join(cfg.StateDir, "vms", ".trash-0102030405060708")
	if err := os.MkdirAll(trash, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(trash); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trash of a removed VM was not deleted: %v", err)
	}
	stray.orphaned(t)
}

func TestStoreFromBeforeIDsIsUpgraded(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A store with a VM and no state dir id anywhere: what an install from
	// before ids has after its schema upgrade.
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "0a1b2c3d4e5f6071")
	st.Close()
	vm := vmDir(t, cfg, "0a1b2c3d4e5f6071")
	if err := runOnce(cfg, false); err != nil {
		t.Fatalf("Run on a store from before ids: %v", err)
	}
	vm.intact(t)
	id, err := store.ReadStateID(cfg.StateDir)
	if err != nil || id == "" {
		t.Fatalf("state dir id after upgrade: %q, %v", id, err)
	}
	st, err = store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, err := st.StateID(context.Background()); err != nil || got != id {
		t.Errorf("store's state dir id = %q, %v; want %q", got, err, id)
	}
}

func TestStoreChangedUnderRunningDaemon(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			vm := installWithVM(t, cfg)
			r := start(t, cfg, nil)
			path := daemon.StorePath(cfg)
			switch how {
			case "deleted":
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			case "replaced":
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path+".new", data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path+".new", path); err != nil {
					t.Fatal(err)
				}
			}
			// Changes are refused at once...
			err := r.client.Do(context.Background(), "DELETE", "/v1/vms/precious", nil, nil)
			if !rpc.IsCode(err, rpc.CodeUnavailable) || !strings.Contains(err.Error(), how) || !strings.Contains(err.Error(), "while bangerd ran") {
				t.Errorf("vm rm with the store %s = %v, want it refused", how, err)
			}
			vm.intact(t)
			// ...and the daemon stops by itself, saying why.
			select {
			case err := <-r.done:
				close(r.done)
				if err == nil || !strings.Contains(err.Error(), path+" was "+how) {
					t.Errorf("daemon stopped with %v, want it to name the store %s", err, how)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the daemon went on running with its store " + how)
			}
			vm.intact(t)
			if how == "deleted" {
				// The next start refuses the new, empty store.
				wantIdentityError(t, runOnce(cfg, false), "the store is empty")
				vm.intact(t)
			}
		})
	}
}

func TestCorruptStoreIsRefusedAtStart(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	path := daemon.StorePath(cfg)
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range 300 {
		if err := st.PutOperation(context.Background(), store.Operation{ID: "op-" + strconv.FormatInt(int64(0x100000000000+i), 16),
			Kind: "pull", Target: strings.Repeat("x", 300), State: store.StateSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := len(data) / 2 / 4096 * 4096
	for i := off; i < off+4096; i++ {
		data[i] = 0xa5
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	err = runOnce(cfg, false)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Run on a damaged store = %v, want a *store.CorruptError naming it", err)
	}
	vm.intact(t)
}

// Rows of another install (a store adopted or copied from elsewhere) name
// run dirs outside this daemon's runtime dir: starting must neither delete
// them nor kill the VMMs using them.
func TestForeignRunDirsAreLeftAlone(t *testing.T) {
	cfg := testConfig(t)
	r := start(t, cfg, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	stoppedRun := filepath.Join(other, "vms", "1111111111111111")
	runningRun := filepath.Join(other, "vms", "2222222222222222")
	for _, d := range []string{stoppedRun, runningRun} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "console.log"), []byte("boot"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	vmm := exec.Command("sh", "-c", "sleep 60; :", "vmm", filepath.Join(runningRun, "api.sock"))
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = vmm.Wait(); close(exited) }()
	t.Cleanup(func() { _ = vmm.Process.Kill(); <-exited })

	ctx := context.Background()
	st, err := store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "1111111111111111", "stopped-vm")
	putVM(t, st, "2222222222222222", "running-vm")
	for id, run := range map[string]string{"1111111111111111": stoppedRun, "2222222222222222": runningRun} {
		v, err := st.GetVM(ctx, map[string]string{"1111111111111111": "stopped-vm", "2222222222222222": "running-vm"}[id])
		if err != nil {
			t.Fatal(err)
		}
		v.RunDir = run
		if id == "2222222222222222" {
			v.State, v.PID, v.VMMKind = store.VMRunning, vmm.Process.Pid, "qemu"
		}
		if err := st.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("a VMM using a run dir outside the runtime dir was killed: %v", vmm.ProcessState)
	case <-time.After(100 * time.Millisecond):
	}
	for _, d := range []string{stoppedRun, runningRun} {
		if _, err := os.Stat(filepath.Join(d, "console.log")); err != nil {
			t.Fatalf("run dir %s outside the runtime dir was removed: %v", d, err)
		}
	}
	st, err = store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.GetVM(ctx, "running-vm")
	if err != nil {
		t.Fatal(err)
	}
	if v.State != store.VMStopped || v.RunDir != "" || !strings.Contains(v.LastError, "runtime dir") {
		t.Fatalf("the foreign running VM is recorded as %s, run dir %q, error %q", v.State, v.RunDir, v.LastError)
	}
}
