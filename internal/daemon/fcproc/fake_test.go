package fcproc

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/procwatch"
)

// fakeTaps points sysClassNet at a directory holding the given taps (each
// with a tun_flags file, as the kernel shows a tap) for the test's duration.
func fakeTaps(t *testing.T, taps ...string) {
	t.Helper()
	root := t.TempDir()
	for _, tap := range taps {
		if err := os.MkdirAll(filepath.Join(root, tap), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, tap, "tun_flags"), []byte("0x1002\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A plain device: exists, but is no tap.
	if err := os.MkdirAll(filepath.Join(root, "eth9"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := sysClassNet
	sysClassNet = root
	t.Cleanup(func() { sysClassNet = old })
}

// testConfig returns a full Config in a fresh VM directory.
func testConfig(t *testing.T, bin string) Config {
	t.Helper()
	dir := t.TempDir()
	files := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return Config{
		Name:      "vm-test-1",
		Binary:    bin,
		Dir:       dir,
		Kernel:    write("vmlinux"),
		Initrd:    write("initrd.img"),
		BootArgs:  "console=ttyS0 reboot=k panic=1",
		VCPUs:     2,
		MemoryMiB: 256,
		Drives: []DriveConfig{
			{ID: "root", Path: write("root.ext4"), Root: true},
			{ID: "data", Path: write("data.ext4"), ReadOnly: true},
		},
		Net:      &NetConfig{Tap: "tap-test0", MAC: "06:00:ac:10:00:02"},
		VsockCID: 42,
		Timeouts: Timeouts{APISocket: 10 * time.Second},
	}
}

// assertGone checks that pid no longer exists (reaped, not a zombie) and
// that neither socket is left in dir.
func assertGone(t *testing.T, pid int, dir string) {
	t.Helper()
	if pid > 0 {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			st, _ := procwatch.ReadStat(pid)
			t.Errorf("process %d still exists (kill 0: %v, state %q)", pid, err, st.State)
			syscall.Kill(pid, syscall.SIGKILL) // do not leak it past the test
		}
	}
	for _, s := range []string{APISocketPath(dir), VsockPath(dir)} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (lstat: %v)", s, err)
		}
	}
}

func jsonEqual(t *testing.T, what string, got json.RawMessage, want any) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: body %q: %v", what, got, err)
	}
	wb, _ := json.Marshal(want)
	json.Unmarshal(wb, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: body\n got %s\nwant %s", what, got, wb)
	}
}

// TestStartFakeLogAndMetricsWhenAsked: the logger and metrics calls are
// made, first and with these bodies, only when the config asks for them
// (TestStartFakeOrderBodiesAndStop checks they are not made otherwise).
func TestStartFakeLogAndMetricsWhenAsked(t *testing.T) {
	fakeTaps(t, "tap-test0")
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.FirecrackerLog, cfg.Metrics = true, true
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.kill() })
	calls := readCalls(t, cfg.Dir)
	if len(calls) < 3 {
		t.Fatalf("fake saw %d calls: %+v", len(calls), calls)
	}
	show := true
	for i, w := range []struct {
		path string
		body any
	}{
		{"/logger", Logger{LogPath: LogPath(cfg.Dir), Level: "Info", ShowLevel: &show}},
		{"/metrics", map[string]any{"metrics_path": MetricsPath(cfg.Dir)}},
	} {
		if c := calls[i]; c.Method != "PUT" || c.Path != w.path {
			t.Errorf("call %d = %s %s, want PUT %s", i, c.Method, c.Path, w.path)
		} else {
			jsonEqual(t, "PUT "+w.path, c.Body, w.body)
		}
	}
}

func TestStartFakeOrderBodiesAndStop(t *testing.T) {
	fakeTaps(t, "tap-test0")
	cfg := testConfig(t, fakeBinary(t, nil))
	// Stale sockets from a previous run: the fake, like Firecracker,
	// refuses PUT /vsock while uds_path exists.
	for _, s := range []string{APISocketPath(cfg.Dir), VsockPath(cfg.Dir)} {
		if err := os.WriteFile(s, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Timeouts.Graceful = 50 * time.Millisecond

	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	if want := fakePID(t, cfg.Dir); p.PID != want {
		t.Errorf("PID = %d, the fake says %d", p.PID, want)
	}
	st, err := procwatch.ReadStat(p.PID)
	if err != nil || st.StartTime != p.StartTime || p.StartTime == 0 {
		t.Errorf("StartTime = %d, /proc says %d (%v)", p.StartTime, st.StartTime, err)
	}
	if p.ConfigDuration <= 0 {
		t.Errorf("ConfigDuration = %v", p.ConfigDuration)
	}
	var names []string
	for _, s := range p.Steps {
		names = append(names, s.Name)
	}
	if !reflect.DeepEqual(names, StepNames()) {
		t.Errorf("Steps = %v, want %v", names, StepNames())
	}
	t.Logf("config duration with the fake: %v", p.ConfigDuration)

	calls := readCalls(t, cfg.Dir)
	// Drop the readiness probes.
	for len(calls) > 0 && calls[0].Method == "GET" && calls[0].Path == "/" {
		calls = calls[1:]
	}
	want := []struct {
		method, path string
		body         any
	}{
		{"PUT", "/machine-config", map[string]any{"vcpu_count": 2, "mem_size_mib": 256}},
		{"PUT", "/boot-source", map[string]any{"kernel_image_path": cfg.Kernel, "initrd_path": cfg.Initrd, "boot_args": cfg.BootArgs}},
		{"PUT", "/drives/root", map[string]any{"drive_id": "root", "path_on_host": DriveLinkName("root"), "is_root_device": true, "is_read_only": false, "cache_type": "Writeback"}},
		{"PUT", "/drives/data", map[string]any{"drive_id": "data", "path_on_host": DriveLinkName("data"), "is_root_device": false, "is_read_only": true, "cache_type": "Writeback"}},
		{"PUT", "/network-interfaces/eth0", map[string]any{"iface_id": "eth0", "host_dev_name": "tap-test0", "guest_mac": "06:00:ac:10:00:02"}},
		{"PUT", "/vsock", map[string]any{"guest_cid": 42, "uds_path": VsockSocketName}},
		{"PUT", "/actions", map[string]any{"action_type": "InstanceStart"}},
	}
	if len(calls) != len(want) {
		t.Fatalf("fake saw %d configuration calls, want %d: %+v", len(calls), len(want), calls)
	}
	// The relative names lead to the drives, from the VM's directory,
	// where Firecracker runs.
	for _, d := range cfg.Drives {
		abs, _ := filepath.Abs(d.Path)
		if got, err := os.Readlink(filepath.Join(cfg.Dir, DriveLinkName(d.ID))); err != nil || got != abs {
			t.Errorf("%s -> %q (%v), want %s", DriveLinkName(d.ID), got, err, abs)
		}
	}
	spec := trySpec(t)
	for i, w := range want {
		c := calls[i]
		if c.Method != w.method || c.Path != w.path {
			t.Errorf("call %d = %s %s, want %s %s", i, c.Method, c.Path, w.method, w.path)
			continue
		}
		jsonEqual(t, c.Method+" "+c.Path, c.Body, w.body)
		if spec == nil {
			continue
		}
		for _, e := range spec.checkRequest(c.Method, c.Path, c.Body) {
			t.Errorf("%s %s: %s", c.Method, c.Path, e)
		}
	}

	// Stop: the hook runs but the guest stays up, so Ctrl-Alt-Del ends it.
	hookRan := false
	err = p.Stop(context.Background(), func(ctx context.Context) error {
		hookRan = true
		if _, ok := ctx.Deadline(); !ok {
			t.Error("graceful hook got a context without deadline")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !hookRan {
		t.Error("graceful hook was not called")
	}
	if err := p.Wait(); err != nil {
		t.Errorf("Wait after Ctrl-Alt-Del exit: %v", err)
	}
	last := readCalls(t, cfg.Dir)
	if l := last[len(last)-1]; l.Path != "/actions" || !strings.Contains(string(l.Body), ActionSendCtrlAltDel) {
		t.Errorf("last call = %s %s %s, want SendCtrlAltDel", l.Method, l.Path, l.Body)
	}
	assertGone(t, p.PID, cfg.Dir)
	// Stop again is harmless.
	if err := p.Stop(context.Background(), nil); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopGracefulHookEndsVM(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_IGNORE_CAD": "1"}))
	cfg.Net = nil
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	// The hook plays the agent's poweroff: the VM goes away by itself.
	err = p.Stop(context.Background(), func(ctx context.Context) error {
		return syscall.Kill(p.PID, syscall.SIGTERM)
	})
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, c := range readCalls(t, cfg.Dir) {
		if strings.Contains(string(c.Body), ActionSendCtrlAltDel) {
			t.Error("Ctrl-Alt-Del sent although the graceful hook ended the VM")
		}
	}
	assertGone(t, p.PID, cfg.Dir)
}

func TestStopKillsWhenGuestIgnoresCtrlAltDel(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_IGNORE_CAD": "1"}))
	cfg.Net = nil
	cfg.Timeouts.CtrlAltDel = 50 * time.Millisecond
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	hookErr := errors.New("agent unreachable")
	if err := p.Stop(context.Background(), func(context.Context) error { return hookErr }); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait = %v, want killed", err)
	}
	sawCAD := false
	for _, c := range readCalls(t, cfg.Dir) {
		sawCAD = sawCAD || strings.Contains(string(c.Body), ActionSendCtrlAltDel)
	}
	if !sawCAD {
		t.Error("Ctrl-Alt-Del was not tried before SIGKILL")
	}
	assertGone(t, p.PID, cfg.Dir)
}

func TestStopWithEndedContextKills(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_IGNORE_CAD": "1"}))
	cfg.Net = nil
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	if err := p.Stop(ctx, func(context.Context) error { called = true; return nil }); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if called {
		t.Error("graceful hook ran with an ended context")
	}
	assertGone(t, p.PID, cfg.Dir)
}

func TestStartFailureAtEachStepCleansUp(t *testing.T) {
	type tc struct {
		step  string
		env   map[string]string
		setup func(t *testing.T, cfg *Config)
		want  string
	}
	failAt := func(call string) map[string]string { return map[string]string{"FCPROC_FAKE_FAIL": call} }
	cases := []tc{
		{step: StepRemoveStaleSockets, setup: func(t *testing.T, cfg *Config) {
			if err := os.MkdirAll(filepath.Join(APISocketPath(cfg.Dir), "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: "is a directory"},
		{step: StepCheckTap, setup: func(t *testing.T, cfg *Config) { cfg.Net.Tap = "tap-missing" }, want: "does not exist"},
		{step: StepCheckTap, setup: func(t *testing.T, cfg *Config) { cfg.Net.Tap = "eth9" }, want: "not a tap"},
		{step: StepLinkDrives, setup: func(t *testing.T, cfg *Config) {
			if err := os.MkdirAll(filepath.Join(cfg.Dir, DriveLinkName("data"), "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: "link drive data"},
		{step: StepSpawn, setup: func(t *testing.T, cfg *Config) { cfg.Binary = filepath.Join(cfg.Dir, "no-such-firecracker") }, want: "not found"},
		{step: StepWaitAPI, env: map[string]string{"FCPROC_FAKE_MODE": "exit"}, want: "boom, exiting early"},
		{step: StepWaitAPI, env: map[string]string{"FCPROC_FAKE_MODE": "noapi"}, setup: func(t *testing.T, cfg *Config) {
			cfg.Timeouts.APISocket = 100 * time.Millisecond
		}, want: "did not answer"},
		{step: StepPutLogger, env: failAt("PUT /logger"), setup: func(t *testing.T, cfg *Config) { cfg.FirecrackerLog = true }, want: "injected failure"},
		{step: StepPutMetrics, env: failAt("PUT /metrics"), setup: func(t *testing.T, cfg *Config) { cfg.Metrics = true }, want: "injected failure"},
		{step: StepPutMachineConfig, env: failAt("PUT /machine-config"), want: "injected failure"},
		{step: StepPutBootSource, env: failAt("PUT /boot-source"), want: "injected failure"},
		{step: StepPutDrives, env: failAt("PUT /drives/data"), want: "drive data"},
		{step: StepPutNetwork, env: failAt("PUT /network-interfaces/eth0"), want: "injected failure"},
		{step: StepPutVsock, env: failAt("PUT /vsock"), want: "injected failure"},
		{step: StepInstanceStart, env: failAt("PUT /actions"), want: "400 Bad Request: injected failure"},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.step] = true
		t.Run(c.step, func(t *testing.T) {
			fakeTaps(t, "tap-test0")
			cfg := testConfig(t, fakeBinary(t, c.env))
			if c.setup != nil {
				c.setup(t, &cfg)
			}
			p, err := Start(context.Background(), cfg)
			if err == nil {
				p.Stop(context.Background(), nil)
				t.Fatal("Start succeeded")
			}
			var se *StepError
			if !errors.As(err, &se) || se.Step != c.step {
				t.Fatalf("error %q is not a StepError of step %s", err, c.step)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "step "+c.step) {
				t.Errorf("error %q does not name step %s and say %q", err, c.step, c.want)
			}
			pid := fakePID(t, cfg.Dir)
			spawnedYet := c.step != StepRemoveStaleSockets && c.step != StepCheckTap && c.step != StepLinkDrives && c.step != StepSpawn
			if spawnedYet != (se.PID != 0) {
				t.Errorf("StepError.PID = %d at step %s; want a process only once spawned", se.PID, c.step)
			}
			// The fake writes its pid as it starts. One that never answers
			// is killed when the API wait times out (100 ms here), which on
			// a loaded machine can come before it got that far.
			if pid == 0 && spawnedYet && c.step != StepWaitAPI {
				t.Errorf("the fake did not run, yet Start failed at step %s", c.step)
			}
			if pid != 0 && se.PID != pid {
				t.Errorf("StepError.PID = %d, the fake says %d", se.PID, pid)
			}
			if c.step == StepRemoveStaleSockets {
				return // the directory in the socket's place is the user's to remove
			}
			assertGone(t, se.PID, cfg.Dir)
		})
	}
	for _, s := range StepNames() {
		if !covered[s] {
			t.Errorf("no failure case for step %s", s)
		}
	}
}

func TestStartKVMFaultBecomesClearError(t *testing.T) {
	// The fault exactly as Firecracker v1.14.2 sends it without /dev/kvm
	// access, backslash-newline included.
	fault := "Start microvm error: Kvm error: Error creating KVM object: Permission denied (os error 13) Make sure the user launching the firecracker process is \\\nconfigured on the /dev/kvm file's ACL."
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_FAIL": "PUT /actions", "FCPROC_FAKE_FAULT": fault}))
	cfg.Net = nil
	_, err := Start(context.Background(), cfg)
	want := "start VM: Firecracker could not use KVM (Start microvm error: Kvm error: Error creating KVM object: Permission denied (os error 13) Make sure the user launching the firecracker process is configured on the /dev/kvm file's ACL.): /dev/kvm is missing or not accessible — load the kvm module and give this user access to /dev/kvm, or use vmm = \"qemu\""
	if err == nil || err.Error() != want {
		t.Fatalf("error =\n%v\nwant\n%s", err, want)
	}
	if !errors.Is(err, ErrKVM) {
		t.Error("errors.Is(err, ErrKVM) is false")
	}
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepInstanceStart {
		t.Errorf("not a StepError of %s: %#v", StepInstanceStart, err)
	}
	assertGone(t, fakePID(t, cfg.Dir), cfg.Dir)
}

func TestStartRefusesDirOfRunningVM(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.Net = nil
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	_, err = Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "still serving") {
		t.Fatalf("second Start on the same dir: %v", err)
	}
	if _, err := p.Client().InstanceInfo(context.Background()); err != nil {
		t.Errorf("first VM no longer answers: %v", err)
	}
	if _, err := os.Stat(VsockPath(cfg.Dir)); err != nil {
		t.Errorf("first VM's vsock socket was touched: %v", err)
	}
}

func TestStartRejectsBadConfigWithoutSideEffects(t *testing.T) {
	base := testConfig(t, fakeBinary(t, nil))
	longDir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(longDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"bad name":       func(c *Config) { c.Name = "vm 1" },
		"long name":      func(c *Config) { c.Name = strings.Repeat("a", 65) },
		"relative dir":   func(c *Config) { c.Dir = "vms/x" },
		"missing dir":    func(c *Config) { c.Dir = filepath.Join(c.Dir, "nope") },
		"long dir":       func(c *Config) { c.Dir = longDir },
		"no kernel":      func(c *Config) { c.Kernel = "" },
		"missing kernel": func(c *Config) { c.Kernel = filepath.Join(c.Dir, "nope") },
		"missing initrd": func(c *Config) { c.Initrd = filepath.Join(c.Dir, "nope") },
		"zero vcpus":     func(c *Config) { c.VCPUs = 0 },
		"33 vcpus":       func(c *Config) { c.VCPUs = 33 },
		"no memory":      func(c *Config) { c.MemoryMiB = 0 },
		"bad drive id":   func(c *Config) { c.Drives[0].ID = "a/b" },
		"dup drive":      func(c *Config) { c.Drives[1].ID = "root" },
		"two roots":      func(c *Config) { c.Drives[1].Root = true },
		"missing drive":  func(c *Config) { c.Drives[1].Path = filepath.Join(c.Dir, "nope") },
		"bad tap":        func(c *Config) { c.Net.Tap = "../x" },
		"long tap":       func(c *Config) { c.Net.Tap = "tap0123456789abc" },
		"bad mac":        func(c *Config) { c.Net.MAC = "06:00" },
		"reserved cid":   func(c *Config) { c.VsockCID = 2 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := base
			cfg.Drives = append([]DriveConfig(nil), base.Drives...)
			n := *base.Net
			cfg.Net = &n
			mutate(&cfg)
			_, err := Start(context.Background(), cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "start VM: ") {
				t.Fatalf("Start = %v, want a start VM error", err)
			}
			entries, _ := os.ReadDir(base.Dir)
			if len(entries) != 0 {
				t.Errorf("bad input left %d entries in the VM dir", len(entries))
			}
		})
	}
}

func TestStartWithEndedContextSpawnsNothing(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.Net = nil
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	if pid := fakePID(t, cfg.Dir); pid != 0 {
		t.Errorf("fake spawned (pid %d) under an ended context", pid)
	}
}

func TestAdopt(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, map[string]string{"FCPROC_FAKE_IGNORE_CAD": "1"}))
	cfg.Net = nil
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })

	if _, err := Adopt(p.PID, p.StartTime+1, cfg.Dir); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt with another start time = %v, want not ours", err)
	}
	if _, err := Adopt(p.PID, p.StartTime, t.TempDir()); !errors.Is(err, ErrNotOurs) || !strings.Contains(err.Error(), "not ours") {
		t.Errorf("Adopt with another dir = %v, want not ours", err)
	}
	self, _ := procwatch.ReadStat(os.Getpid())
	if _, err := Adopt(os.Getpid(), self.StartTime, cfg.Dir); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Adopt of the test process = %v, want not ours", err)
	}
	if _, err := Adopt(0, 1, cfg.Dir); err == nil {
		t.Error("Adopt(0) succeeded")
	}

	a, err := Adopt(p.PID, p.StartTime, cfg.Dir)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if info, err := a.Client().InstanceInfo(context.Background()); err != nil || info.ID != cfg.Name {
		t.Errorf("adopted client: %+v, %v", info, err)
	}
	a.Timeouts.CtrlAltDel = 50 * time.Millisecond
	// The fake ignores Ctrl-Alt-Del, so this goes through the pidfd kill.
	if err := a.Stop(context.Background(), nil); err != nil {
		t.Fatalf("adopted Stop: %v", err)
	}
	if err := a.Wait(); err != nil {
		t.Errorf("adopted Wait: %v", err)
	}
	<-p.Done()
	assertGone(t, p.PID, cfg.Dir)
	if _, err := Adopt(p.PID, p.StartTime, cfg.Dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt after exit = %v, want not running", err)
	}
}

func TestAdoptRelease(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.Net = nil
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	a, err := Adopt(p.PID, p.StartTime, cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	a.Release()
	if err := a.Wait(); err == nil || !strings.Contains(err.Error(), "released") {
		t.Errorf("Wait after Release = %v", err)
	}
	if p.Exited() {
		t.Error("Release stopped the VM")
	}
}
