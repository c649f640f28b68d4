package fcproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/vmm"
)

var (
	fullCreate = SnapshotCreateParams{MemFilePath: "/s/fc.mem", SnapshotPath: "/s/fc.vmstate", SnapshotType: "Full"}
	fullLoad   = SnapshotLoadParams{SnapshotPath: "/s/fc.vmstate", MemBackend: &MemoryBackend{BackendType: "File", BackendPath: "/s/fc.mem"},
		TrackDirtyPages: ptr(false), ResumeVM: true, NetworkOverrides: []NetworkOverride{{IfaceID: IfaceID, HostDevName: "tap1"}}}
)

// Every snapshot body the client sends, full and minimal, is one the spec
// accepts, and the full variants set every field.
func TestSnapshotRequestsMatchSpec(t *testing.T) {
	spec := loadSpec(t)
	c, calls := recordingServer(t)
	ctx := context.Background()
	for _, err := range []error{
		c.PatchVM(ctx, "Paused"),
		c.PatchVM(ctx, "Resumed"),
		c.CreateSnapshot(ctx, fullCreate),
		c.CreateSnapshot(ctx, SnapshotCreateParams{MemFilePath: "m", SnapshotPath: "s"}),
		c.LoadSnapshot(ctx, fullLoad),
		c.LoadSnapshot(ctx, loadParams(Config{}, RestoreConfig{Dir: "/s"})),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := calls()
	if len(got) != 6 {
		t.Fatalf("server saw %d calls, want 6", len(got))
	}
	for _, r := range got {
		for _, e := range spec.checkRequest(r.method, r.path, r.body) {
			t.Errorf("%s %s %s: %s", r.method, r.path, r.body, e)
		}
	}
	// A wrong state is caught by the checker: the test can fail.
	if e := spec.checkRequest("PATCH", "/vm", []byte(`{"state":"Running"}`)); len(e) == 0 {
		t.Error("the spec checker accepts PATCH /vm state Running")
	}
	if e := spec.checkRequest("PUT", "/vm", []byte(`{"state":"Paused"}`)); len(e) == 0 {
		t.Error("the spec checker accepts PUT /vm")
	}
	for _, v := range []any{fullCreate, fullLoad, *fullLoad.MemBackend, fullLoad.NetworkOverrides[0], VM{State: "Paused"}} {
		b, _ := json.Marshal(v)
		var m map[string]any
		json.Unmarshal(b, &m)
		typ := reflect.TypeOf(v)
		for i := 0; i < typ.NumField(); i++ {
			name := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
			if _, ok := m[name]; !ok {
				t.Errorf("%s: full variant does not set %q", typ.Name(), name)
			}
		}
	}
}

// Restore spawns Firecracker and sends it nothing but the snapshot load:
// no machine, boot source, drives, network or vsock before it.
func TestRestoreFakeLoadsOnly(t *testing.T) {
	fakeTaps(t, "tap-test0")
	cfg := testConfig(t, fakeBinary(t, nil))
	snap := t.TempDir()
	p, err := Restore(context.Background(), cfg, RestoreConfig{Dir: snap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	var names []string
	for _, s := range p.Steps {
		names = append(names, s.Name)
	}
	if want := []string{StepRemoveStaleSockets, StepCheckTap, StepLinkDrives, StepSpawn, StepWaitAPI, StepLoadSnapshot}; !reflect.DeepEqual(names, want) {
		t.Errorf("steps %v, want %v", names, want)
	}
	calls := readCalls(t, cfg.Dir)
	for len(calls) > 0 && calls[0].Method == "GET" && calls[0].Path == "/" {
		calls = calls[1:]
	}
	if len(calls) != 1 || calls[0].Method != "PUT" || calls[0].Path != "/snapshot/load" {
		t.Fatalf("calls after the probes: %+v, want the snapshot load only", calls)
	}
	jsonEqual(t, "snapshot/load", calls[0].Body, SnapshotLoadParams{
		SnapshotPath: filepath.Join(snap, StateFileName),
		MemBackend:   &MemoryBackend{BackendType: "File", BackendPath: filepath.Join(snap, MemoryFileName)},
		ResumeVM:     true, NetworkOverrides: []NetworkOverride{{IfaceID: IfaceID, HostDevName: "tap-test0"}},
	})
}

// A refused load kills the process and leaves no socket.
func TestRestoreFakeLoadFailureCleansUp(t *testing.T) {
	fakeTaps(t, "tap-test0")
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_FAIL": "PUT /snapshot/load", "FCPROC_FAKE_FAULT": "Cannot open the snapshot file"}))
	_, err := Restore(context.Background(), cfg, RestoreConfig{Dir: t.TempDir()})
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepLoadSnapshot || !strings.Contains(err.Error(), "Cannot open the snapshot file") {
		t.Fatalf("Restore = %v, want a load-snapshot StepError with the fault", err)
	}
	assertGone(t, se.PID, cfg.Dir)
}

func TestSnapshotRefusedUnderJail(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.Jail = &Jail{Binary: "/nonexistent/jailer", UID: 1, GID: 1, BaseDir: t.TempDir()}
	if _, err := Restore(context.Background(), cfg, RestoreConfig{Dir: t.TempDir()}); !errors.Is(err, vmm.ErrNoSnapshots) {
		t.Errorf("jailed Restore = %v", err)
	}
	p := &Process{Jailed: true}
	if _, err := p.SaveState(context.Background(), t.TempDir()); !errors.Is(err, vmm.ErrNoSnapshots) {
		t.Errorf("jailed SaveState = %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	if v, err := parseVersion("Firecracker v1.14.2\n\n"); err != nil || v != "1.14.2" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	for _, bad := range []string{"", "firecracker", "Firecracker 1.2.3", "x Firecracker v1.2.3"} {
		if v, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) = %q, want an error", bad, v)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	f.Add("Firecracker v1.14.2\n")
	f.Add("Firecracker v1.14.2-dev\nSupported snapshot versions: v8.0.0\n")
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseVersion(s); err == nil && (v == "" || strings.ContainsAny(v, " \n")) {
			t.Errorf("parseVersion(%q) = %q", s, v)
		}
	})
}

// The real Firecracker: a fresh instance refuses pause and snapshot/create
// with a clean 400, a load of missing files fails cleanly and leaves
// nothing, and its two version sources agree.
func TestRealFirecrackerSnapshotErrors(t *testing.T) {
	bin := realFirecracker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := BinaryVersion(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	sock := APISocketPath(dir)
	cmd := exec.Command(bin, spawnArgs(sock, "bgtest-"+randomSuffix(t))...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c := NewClient(sock, 2*time.Second)
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := c.InstanceInfo(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the API never answered: %v", err)
		}
	}
	if av, err := c.Version(ctx); err != nil || strings.TrimPrefix(av, "v") != v {
		t.Errorf("GET /version %q (%v), --version %q", av, err, v)
	}
	var ae *APIError
	if err := c.PatchVM(ctx, "Paused"); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("pause of a fresh instance: %v, want a 400", err)
	} else {
		t.Logf("pause of a fresh instance: %v", err)
	}
	snap := t.TempDir()
	if err := c.CreateSnapshot(ctx, SnapshotCreateParams{MemFilePath: filepath.Join(snap, "m"), SnapshotPath: filepath.Join(snap, "s"), SnapshotType: "Full"}); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("snapshot of a fresh instance: %v, want a 400", err)
	} else {
		t.Logf("snapshot of a fresh instance: %v", err)
	}
	if ents, _ := os.ReadDir(snap); len(ents) != 0 {
		t.Errorf("a refused snapshot left %d files", len(ents))
	}

	// Restore of a snapshot that is not there.
	files := t.TempDir()
	cfg := Config{Name: "bgtest-" + randomSuffix(t), Binary: bin, Dir: t.TempDir(), Kernel: stubKernel(t, files),
		VCPUs: 1, MemoryMiB: 128, Drives: []DriveConfig{{ID: "root", Path: sparseDisk(t, files), Root: true}}, VsockCID: 3}
	_, err = Restore(ctx, cfg, RestoreConfig{Dir: t.TempDir()})
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepLoadSnapshot || !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("restore of a missing snapshot: %v, want a 400 at %s", err, StepLoadSnapshot)
	}
	t.Logf("restore of a missing snapshot: %v", err)
	assertGone(t, se.PID, cfg.Dir)
}

// snapshotServer is a started Firecracker's API as far as SaveState uses
// it: it writes the files snapshot/create names (a partial state file and
// a 400 when fail is set) and checks each request against the spec.
func snapshotServer(t *testing.T, fail bool) *Client {
	t.Helper()
	spec := loadSpec(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		for _, e := range spec.checkRequest(r.Method, r.URL.Path, b) {
			t.Errorf("%s %s %s: %s", r.Method, r.URL.Path, b, e)
		}
		switch r.URL.Path {
		case "/version":
			json.NewEncoder(w).Encode(FirecrackerVersion{FirecrackerVersion: "1.14.2"})
		case "/vm/config":
			json.NewEncoder(w).Encode(VMConfig{Drives: []Drive{{DriveID: "root", PathOnHost: "/d/root.ext4", IsRootDevice: true}}, Vsock: &Vsock{GuestCID: 3, UDSPath: "/run/vm/fc.vsock"}})
		case "/snapshot/create":
			var p SnapshotCreateParams
			json.Unmarshal(b, &p)
			os.WriteFile(p.SnapshotPath, []byte("state"), 0o600)
			if fail {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"fault_message": "No space left on device"})
				return
			}
			os.WriteFile(p.MemFilePath, make([]byte, 1<<20), 0o600)
			w.WriteHeader(http.StatusNoContent)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := NewClient(sock, 0)
	t.Cleanup(c.Close)
	return c
}

// SaveState writes the state, the memory and the paths the snapshot
// names; a refused snapshot leaves none of them.
func TestSaveStateFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := machine{p: &Process{client: snapshotServer(t, false), Dir: "/run/vm"}}
	st, err := m.SaveState(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.VMM != vmm.Firecracker || st.VMMVersion != "1.14.2" || len(st.Files) != 3 || st.Bytes < 1<<20 {
		t.Errorf("state %+v", st)
	}
	if err := checkPaths(dir, relativePaths([]string{"root"}), savedPaths{Vsock: "/run/vm/fc.vsock", Drives: []string{"/d/root.ext4"}}); err != nil {
		t.Errorf("the paths it was saved with: %v", err)
	}
	for _, other := range []savedPaths{
		{Vsock: "/run/clone/fc.vsock", Drives: []string{"/d/root.ext4"}},
		{Vsock: "/run/vm/fc.vsock", Drives: []string{"/d/clone.ext4"}},
	} {
		err := checkPaths(dir, relativePaths([]string{"root"}), other)
		if !errors.Is(err, vmm.ErrMismatch) || !strings.Contains(err.Error(), "Firecracker paths") {
			t.Errorf("restore with %v: %v", other, err)
		}
	}
	if err := checkPaths(t.TempDir(), savedPaths{}, savedPaths{}); err == nil {
		t.Error("a snapshot without its paths file passes")
	}

	dir = t.TempDir()
	m = machine{p: &Process{client: snapshotServer(t, true), Dir: "/run/vm"}}
	if _, err := m.SaveState(ctx, dir); err == nil || !strings.Contains(err.Error(), "No space left on device") {
		t.Errorf("refused snapshot: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a refused snapshot left %d files", len(ents))
	}
}

// The driver refuses a snapshot of another VM's paths before it spawns
// anything.
func TestRealDriverRestoreRefusesOtherPaths(t *testing.T) {
	bin := realFirecracker(t)
	ctx := context.Background()
	v, err := BinaryVersion(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	spec := vmm.Spec{Name: "clone", RunDir: t.TempDir(), Kernel: stubKernel(t, files), VCPUs: 1, MemoryMiB: 128,
		Drives: []string{sparseDisk(t, files)}}
	snap := t.TempDir()
	b, _ := json.Marshal(savedPaths{Vsock: "/run/parent/fc.vsock", Drives: []string{"/parent/root.ext4"}})
	if err := os.WriteFile(filepath.Join(snap, PathsFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	st := vmm.State{VMM: vmm.Firecracker, VMMVersion: v, Files: []string{StateFileName, MemoryFileName, PathsFileName}}
	spec.Restore = &vmm.Restore{Dir: snap, State: st.WithShape(spec)}
	_, _, err = NewDriver(DriverConfig{Binary: bin}).Start(ctx, spec)
	if !errors.Is(err, vmm.ErrMismatch) || !strings.Contains(err.Error(), "/run/parent/fc.vsock") {
		t.Fatalf("restore of another VM's snapshot: %v", err)
	}
	if _, err := os.Stat(APISocketPath(spec.RunDir)); !os.IsNotExist(err) {
		t.Errorf("Firecracker was spawned: %v", err)
	}
}

// TestRealFirecrackerCloneUsesItsOwnFiles: a snapshot of a VM started by
// Start names its drives and vsock socket relative to the VM's directory,
// so a clone restored through the driver in another directory opens its
// own disk and binds its own socket while the parent still runs; one of
// another drive layout is refused before anything is spawned. (The guest
// never runs on a host without usable KVM: only the VMM's side is checked.)
func TestRealFirecrackerCloneUsesItsOwnFiles(t *testing.T) {
	bin := realFirecracker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	files := t.TempDir()
	parentDisk := sparseDisk(t, files)
	cfg := Config{Name: "bgtest-" + randomSuffix(t), Binary: bin, Dir: t.TempDir(), Kernel: stubKernel(t, files),
		BootArgs: "console=ttyS0", VCPUs: 1, MemoryMiB: 128, VsockCID: 3,
		Drives: []DriveConfig{{ID: "root", Path: parentDisk, Root: true}}}
	p, err := Start(ctx, cfg)
	if errors.Is(err, ErrKVM) {
		t.Skipf("Firecracker cannot start a VM here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(doneCtx(), nil)
	vc, err := p.Client().VMConfig(ctx)
	if err != nil || len(vc.Drives) != 1 || vc.Drives[0].PathOnHost != DriveLinkName("root") || vc.Vsock == nil || vc.Vsock.UDSPath != VsockSocketName {
		t.Fatalf("the VM's config names %+v (vsock %+v), %v: want paths relative to its directory", vc.Drives, vc.Vsock, err)
	}
	if !openFile(t, p.PID, parentDisk) {
		t.Fatalf("the parent has not opened its disk %s", parentDisk)
	}
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	snap := t.TempDir()
	version, err := p.SaveState(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(ctx); err != nil {
		t.Fatal(err)
	}

	cloneDisk := filepath.Join(t.TempDir(), "clone.ext4")
	if err := os.WriteFile(cloneDisk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cloneDisk, 64<<20); err != nil {
		t.Fatal(err)
	}
	spec := vmm.Spec{Name: "clone", RunDir: t.TempDir(), Kernel: cfg.Kernel, VCPUs: 1, MemoryMiB: 128, Drives: []string{cloneDisk}}
	st := vmm.State{VMM: vmm.Firecracker, VMMVersion: version, Files: []string{StateFileName, MemoryFileName, PathsFileName}}
	spec.Restore = &vmm.Restore{Dir: snap, State: st.WithShape(spec)}
	d := NewDriver(DriverConfig{Binary: bin})
	m, l, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("restore a clone in another directory: %v", err)
	}
	defer m.Stop(doneCtx(), nil)
	clone := m.(machine).p
	if !l.Restored || !openFile(t, clone.PID, cloneDisk) || openFile(t, clone.PID, parentDisk) {
		t.Errorf("the clone (restored %v) does not have its own disk open, or has the parent's", l.Restored)
	}
	if fi, err := os.Stat(VsockPath(spec.RunDir)); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("the clone's vsock socket is not in its directory: %v", err)
	}
	if info, err := clone.Client().InstanceInfo(ctx); err != nil || info.State != "Running" {
		t.Errorf("the clone's instance info %+v, %v", info, err)
	}

	// Two drives where the snapshot has one: refused, nothing spawned.
	other := spec
	other.RunDir, other.Drives = t.TempDir(), []string{cloneDisk, parentDisk}
	other.Restore = &vmm.Restore{Dir: snap, State: st.WithShape(other)}
	if _, _, err := d.Start(ctx, other); !errors.Is(err, vmm.ErrMismatch) {
		t.Errorf("restore with another drive layout: %v, want a mismatch", err)
	}
	if _, err := os.Stat(APISocketPath(other.RunDir)); !os.IsNotExist(err) {
		t.Errorf("Firecracker was spawned for a refused restore: %v", err)
	}
}

// openFile says whether process pid has path open.
func openFile(t *testing.T, pid int, path string) bool {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && target == path {
			return true
		}
	}
	return false
}

// doneCtx is a cancelled context: Stop with it kills at once (the stub
// guest would never answer a graceful stop).
func doneCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestCheckPathsHintFitsTheMismatch: the hint of a refused restore says
// what is wrong with this snapshot. One that holds banger's relative names
// but other drives (a clone of another drive layout, or a paths file that
// does not match its state) was told it "holds absolute paths (made by an
// earlier build of banger)", which it does not; and a snapshot that does
// hold absolute paths (of a VM started by an earlier build, even if saved
// by this one) is only fixed by a snapshot taken after that VM restarts.
func TestCheckPathsHintFitsTheMismatch(t *testing.T) {
	write := func(sp savedPaths) string {
		dir := t.TempDir()
		b, _ := json.Marshal(sp)
		if err := os.WriteFile(filepath.Join(dir, PathsFileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	legacy := savedPaths{Vsock: "/run/clone/fc.vsock", Drives: []string{"/d/clone.ext4", "/d/data.ext4"}}

	err := checkPaths(write(relativePaths([]string{"root"})), relativePaths([]string{"root", "disk1"}), legacy)
	if !errors.Is(err, vmm.ErrMismatch) {
		t.Fatalf("another drive layout: %v, want a mismatch", err)
	}
	if strings.Contains(err.Error(), "absolute") || strings.Contains(err.Error(), "earlier build") {
		t.Errorf("a snapshot of relative names is said to hold absolute paths: %v", err)
	}

	err = checkPaths(write(savedPaths{Vsock: "/run/parent/fc.vsock", Drives: []string{"/d/parent.ext4", "/d/data.ext4"}}),
		relativePaths([]string{"root", "disk1"}), legacy)
	if !errors.Is(err, vmm.ErrMismatch) || !strings.Contains(err.Error(), "absolute") || !strings.Contains(err.Error(), "restart") {
		t.Errorf("a snapshot of absolute paths: %v, want a hint that names them and the restart a new snapshot needs", err)
	}
}

// TestCanSave: a root bangerd with a jailer beside Firecracker (or one
// named by jailer_bin) would jail, and a jailed Firecracker is not saved:
// CanSave says so before anything is started. Without a jailer it can.
func TestCanSave(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := NewDriver(DriverConfig{}).CanSave(); err != nil {
			t.Fatalf("not root: %v, want nil (no jail)", err)
		}
		t.Skip("not root: the jailer is never used")
	}
	t.Setenv("PATH", t.TempDir()) // no jailer on PATH
	bare, jailed := t.TempDir(), t.TempDir()
	for _, f := range []string{filepath.Join(bare, "firecracker"), filepath.Join(jailed, "firecracker"), filepath.Join(jailed, "jailer")} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := NewDriver(DriverConfig{Binary: filepath.Join(bare, "firecracker")}).CanSave(); err != nil {
		t.Errorf("no jailer: %v", err)
	}
	for _, c := range []DriverConfig{
		{Binary: filepath.Join(jailed, "firecracker")},
		{Binary: filepath.Join(bare, "firecracker"), JailerBin: filepath.Join(jailed, "jailer")},
	} {
		if err := NewDriver(c).CanSave(); !errors.Is(err, vmm.ErrNoSnapshots) || !strings.Contains(err.Error(), "jailer") {
			t.Errorf("%+v: %v, want ErrNoSnapshots about the jailer", c, err)
		}
	}
}
