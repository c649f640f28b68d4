package daemon

import (
	"banger/internal/daemon/workspace"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/consolelog"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/vmm"
	"banger/internal/store"
)

// The test binary doubles as a fake QEMU for the VM lifecycle: with
// fakeQEMUEnv set it serves QMP on the descriptor it was handed, writes a
// hostile guest's console (escape sequences, a title change, a screen
// clear, its own uids) to the console descriptor, and exits as a crashed
// guest would, before any agent answers.
const fakeQEMUEnv = "BANGER_DAEMON_FAKE_QEMU"

func TestMain(m *testing.M) {
	if os.Getenv(fakeQEMUEnv) != "" {
		os.Exit(fakeQEMU(os.Args[1:]))
	}
	// Never the host's lock of VMM uids.
	d, err := os.MkdirTemp("", "banger-daemon-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	vmmUIDLockPath = filepath.Join(d, "vmm-uids.lock")
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func fakeQEMU(args []string) int {
	qmp, console := -1, -1
	for i := 0; i+1 < len(args); i++ {
		a := args[i+1]
		switch {
		case args[i] == "-chardev" && strings.HasPrefix(a, "socket,id=qmp,fd="):
			qmp, _ = strconv.Atoi(strings.Split(strings.TrimPrefix(a, "socket,id=qmp,fd="), ",")[0])
		case args[i] == "-add-fd" && strings.Contains(a, ",set=1,"):
			console, _ = strconv.Atoi(strings.Split(strings.TrimPrefix(a, "fd="), ",")[0])
		}
	}
	if qmp < 3 || console < 3 {
		fmt.Fprintln(os.Stderr, "fake qemu: no qmp or console descriptor")
		return 2
	}
	out := os.NewFile(uintptr(console), "console")
	// A huge log (sparse, so the test stays cheap): whatever reads it must
	// read only its end. The descriptor appends, so what follows lands
	// after it.
	if err := out.Truncate(4 << 30); err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu: grow the console:", err)
	}
	fmt.Fprintln(out)
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			fmt.Fprintf(out, "fake %s\n", strings.Join(strings.Fields(l), " "))
		}
	}
	for i := 0; i < 100; i++ {
		fmt.Fprintf(out, "noise line %d\n", i)
	}
	fmt.Fprint(out, "\x1b]0;pwned title\x07\x1b[2J\x1b[31mKernel panic - not syncing\x1b[0m\r\n\u009b6n\x1bP+q\x1b\\end\n")
	out.Close()
	l, err := net.FileListener(os.NewFile(uintptr(qmp), "qmp"))
	if err != nil {
		return 1
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				enc := json.NewEncoder(c)
				enc.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var req struct {
						Execute string          `json:"execute"`
						ID      json.RawMessage `json:"id"`
					}
					json.Unmarshal(sc.Bytes(), &req)
					ret := any(map[string]any{})
					if req.Execute == "query-status" {
						ret = map[string]any{"status": "running", "running": true}
					}
					enc.Encode(map[string]any{"return": ret, "id": req.ID})
				}
			}()
		}
	}()
	time.Sleep(500 * time.Millisecond) // the guest "crashes"
	return 1
}

// testVMManager makes a manager on a real store with one created VM whose
// kernel and disk are plain files, started by the fake QEMU above.
func testVMManager(t *testing.T) (*vmManager, store.VM) {
	t.Helper()
	run, err := os.MkdirTemp("", "bgvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	// The fake QEMU may run as a user of its own: it must be able to run
	// its binary, so copy it where everyone can.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(run, "qemu")
	copyFile(t, self, bin, 0o755)
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeQEMUEnv, "1")

	state := filepath.Join(t.TempDir(), "state")
	cfg := config.Config{StateDir: state, RuntimeDir: filepath.Join(run, "rt"), QemuBin: bin, Network: netUser, VMM: vmm.QEMU,
		SSHKeyPath: filepath.Join(state, "ssh", "id_ed25519")}
	return newTestVM(t, cfg, vmm.QEMU, nil)
}

// newTestVM makes a manager for cfg on a real store in cfg.StateDir, with
// drivers when not nil, and one created VM of VMM kind whose kernel and
// root disk are plain files.
func newTestVM(t *testing.T, cfg config.Config, kind string, drivers vmm.Registry) (*vmManager, store.VM) {
	t.Helper()
	state := cfg.StateDir
	for _, d := range []string{state, cfg.RuntimeDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vm := newVMManager(cfg, st, imagemgr.New(st, state, agentBinary), slog.New(slog.DiscardHandler))
	t.Cleanup(vm.Shutdown)
	if drivers != nil {
		vm.drivers, vm.host = drivers, func() vmm.Host { return vmm.Host{} }
	}

	now := time.Now().UTC()
	files := t.TempDir()
	kernel := filepath.Join(files, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := store.Kernel{ID: "k1", Name: "k", VmlinuxPath: kernel, CreatedAt: now}
	im := store.Image{ID: "i1", Name: "img", RootfsPath: kernel, KernelRef: "k", CreatedAt: now}
	if err := st.PutKernel(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	id := newVMID()
	dir, err := vm.ws.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, workspace.RootDiskName)
	if err := os.WriteFile(root, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	v := store.VM{ID: id, Name: "failing", ImageID: im.ID, KernelID: k.ID, VCPUs: 1, MemoryBytes: 256 << 20,
		DiskBytes: 1 << 20, State: store.VMCreated, VMMRequested: kind, COWKind: "copy", COWDevice: root,
		CreatedAt: now, UpdatedAt: now}
	if err := st.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	return vm, v
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

type noProgress struct{}

func (noProgress) Phase(string)               {}
func (noProgress) SetTotal(int64, store.Unit) {}
func (noProgress) Add(int64)                  {}

// A start that fails once the guest runs: the VM is recorded failed, its
// run dir is gone, the console's end is kept in the VM's directory, and
// the error shows the console's last lines without their escape sequences.
// Under root the VMM ran as a user of its own.
func TestFailedStartRemovesRunDirAndShowsCleanConsole(t *testing.T) {
	vm, v := testVMManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := vm.Start(ctx, v.Name, "", noProgress{})
	if err == nil {
		t.Fatal("Start succeeded with a guest that crashes")
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\x1b\x07\r") || strings.Contains(msg, "\u009b") || strings.Contains(msg, "pwned") {
		t.Errorf("the error carries the guest's control sequences: %q", msg)
	}
	for _, want := range []string{"the VMM exited", "Kernel panic - not syncing", workspace.FailedConsoleName, "noise line 99"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "noise line 80\n") {
		t.Errorf("error shows more than the last lines: %s", msg)
	}
	if _, err := os.Stat(vm.runDir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir %s left after a failed start (%v)", vm.runDir(v.ID), err)
	}
	got, err := vm.st.GetVM(ctx, v.Name)
	if err != nil || got.State != store.VMFailed || got.PID != 0 {
		t.Errorf("VM recorded as %q pid %d (%v), want failed", got.State, got.PID, err)
	}
	kept, err := os.ReadFile(filepath.Join(vm.ws.Dir(v.ID), workspace.FailedConsoleName))
	if err != nil || !strings.Contains(string(kept), "Kernel panic") || len(kept) != consolelog.DefaultMax {
		t.Fatalf("kept console log: %d bytes, %v; want the last %d of the huge log", len(kept), err, consolelog.DefaultMax)
	}
	if os.Geteuid() == 0 {
		lines := consolelog.Tail(filepath.Join(vm.ws.Dir(v.ID), workspace.FailedConsoleName), 200)
		var uids string
		for _, l := range lines {
			if u, ok := strings.CutPrefix(l, "fake Uid: "); ok {
				uids = u
			}
		}
		f := strings.Fields(uids)
		if len(f) != 4 {
			t.Fatalf("the fake QEMU did not report its uids: %q", uids)
		}
		for _, s := range f {
			n, _ := strconv.ParseUint(s, 10, 32)
			if n < vmmUIDBase || n >= vmmUIDBase+vmmUIDCount {
				t.Errorf("QEMU ran as uids %q under a root bangerd, want one uid from the VMM range", uids)
				break
			}
		}
	}
}

// A start that fails before the VMM runs removes its run dir too.
func TestStartFailingEarlyRemovesRunDir(t *testing.T) {
	vm, v := testVMManager(t)
	k, _ := vm.st.GetKernelByID(context.Background(), v.KernelID)
	os.Remove(k.VmlinuxPath) // QEMU's configuration check refuses it
	_, err := vm.Start(context.Background(), v.Name, "", noProgress{})
	if err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Fatalf("Start with a missing kernel: %v", err)
	}
	if _, err := os.Stat(vm.runDir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir %s left after a failed start (%v)", vm.runDir(v.ID), err)
	}
}

func TestVMMUsersAreDistinct(t *testing.T) {
	if os.Geteuid() != 0 {
		var u vmmUsers
		cred, release, err := u.credential("x")
		if cred != nil || err != nil {
			t.Fatalf("a user's bangerd got a VMM credential %+v, %v", cred, err)
		}
		release()
		return
	}
	var u vmmUsers
	seen := map[uint32]bool{}
	var releases []func()
	for i := 0; i < 50; i++ {
		cred, release, err := u.credential("same-id")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
		if seen[cred.Uid] || cred.Uid != cred.Gid || cred.Uid < vmmUIDBase || cred.Uid >= vmmUIDBase+vmmUIDCount {
			t.Fatalf("uid %d/%d: repeated or outside the range", cred.Uid, cred.Gid)
		}
		seen[cred.Uid] = true
	}
	for _, r := range releases {
		r()
	}
	used, err := uidsInUse(0, 1<<31)
	if err != nil || !used[0] {
		t.Errorf("uidsInUse does not see root: %v", err)
	}
}

// fakeMachine is a VMM that runs until done is closed, writing to logs.
type fakeMachine struct {
	ch   chan struct{}
	logf []string
}

func (m *fakeMachine) PID() int                                                { return 0 }
func (m *fakeMachine) StartTime() uint64                                       { return 0 }
func (m *fakeMachine) Done() <-chan struct{}                                   { return m.ch }
func (m *fakeMachine) Stop(context.Context, func(context.Context) error) error { return nil }
func (m *fakeMachine) Logs() []string                                          { return m.logf }
func (m *fakeMachine) Agent() vmm.AgentLink                                    { return vmm.NewMux("") }

// While a VM runs, its watcher keeps a noisy guest's console log bounded;
// when the VMM exits the VM is recorded stopped.
func TestWatchCapsTheConsoleOfARunningVM(t *testing.T) {
	vm, v := testVMManager(t)
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	w, err := os.OpenFile(console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m := &fakeMachine{ch: make(chan struct{}), logf: []string{console}}
	v.State, v.RunDir = store.VMRunning, dir
	if err := vm.st.PutVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	vm.setLive(v.ID, &liveVM{m: m})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		vm.watch(v.ID, v.Name, m)
	}()
	line := []byte(strings.Repeat("guest noise ", 10) + "\n")
	for written := 0; written < 3*consolelog.DefaultMax; written += len(line) {
		w.Write(line)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(console)
		if err == nil && fi.Size() <= consolelog.DefaultMax {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console log still %d bytes after 10 s, want at most %d", fi.Size(), consolelog.DefaultMax)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi, err := os.Stat(console + ".1"); err != nil || fi.Size() != consolelog.DefaultMax {
		t.Errorf("rotated console log: %v", err)
	}
	close(m.ch)
	<-watched
	if got, _ := vm.st.GetVM(context.Background(), v.Name); got.State != store.VMStopped {
		t.Errorf("VM recorded %q after its VMM exited, want stopped", got.State)
	}
}
