package fcproc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/procwatch"
)

// realJailer is the jailer named by BANGER_TEST_JAILER; the test skips
// without it, or when not root (the jailer changes uid and makes nodes).
func realJailer(t *testing.T) string {
	t.Helper()
	j := os.Getenv("BANGER_TEST_JAILER")
	if j == "" {
		t.Skip("BANGER_TEST_JAILER is not set; point it at Firecracker's jailer to run this test")
	}
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs root")
	}
	if _, err := os.Stat(j); err != nil {
		t.Fatalf("BANGER_TEST_JAILER: %v", err)
	}
	return j
}

// procStatus returns the fields of /proc/PID/status (or of a task).
func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// jailedConfig is a VM for the real jailer, under a short temporary
// directory (the sockets live in the chroot, under 108 bytes), whose tap
// is owned by tapOwner.
func jailedConfig(t *testing.T, tapOwner int) (cfg Config, disk string) {
	t.Helper()
	bin := realFirecracker(t)
	jailer := realJailer(t)
	const uid = 0x7A00FFF2
	top, err := os.MkdirTemp("/var/tmp", "bgj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	run := filepath.Join(top, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	disk = sparseDisk(t, top)
	if err := os.Chmod(disk, 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		Name: "bgjail-" + randomSuffix(t), Binary: bin, Dir: run,
		Kernel: stubKernel(t, top), BootArgs: "console=ttyS0", VCPUs: 1, MemoryMiB: 128,
		Drives:   []DriveConfig{{ID: "root", Path: disk, Root: true}},
		Net:      &NetConfig{Tap: makeTap(t, tapOwner), MAC: "06:00:ac:10:00:03"},
		VsockCID: 3,
		Jail:     &Jail{Binary: jailer, UID: uid, GID: uid, BaseDir: filepath.Join(top, "jail")},
		Timeouts: Timeouts{CtrlAltDel: 200 * time.Millisecond},
	}, disk
}

// threadsSeccomp maps each thread's name of pid to its Seccomp mode.
func threadsSeccomp(t *testing.T, pid int) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, task := range tasks {
		base := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
		comm, _ := os.ReadFile(base + "comm")
		m[strings.TrimSpace(string(comm))+"/"+task.Name()] = procStatus(t, base+"status")["Seccomp"]
	}
	return m
}

// TestRealJailedFirecracker starts a VM through Start under the real jailer.
// Once every pre-boot call has passed it checks that Firecracker (the pid
// Start spawned) runs as the jail's uid without capabilities, chrooted,
// with its API thread under seccomp, and that Adopt recognises it from the
// run dir alone. InstanceStart then boots the stub kernel (or fails with
// the KVM error where KVM is unusable); after Stop or the failure nothing
// is left: no process, no chroot, no links, no cgroup, and the disk is
// root's again.
func TestRealJailedFirecracker(t *testing.T) {
	cfg, disk := jailedConfig(t, 0x7A00FFF2)
	uid := cfg.Jail.UID
	jailDir := filepath.Join(cfg.Jail.BaseDir, "firecracker", cfg.Name)
	root := filepath.Join(jailDir, "root")

	checked := false
	afterStep = func(s *starter, step string) {
		if s.cfg.Name != cfg.Name || step != StepPutVsock {
			return
		}
		checked = true
		pid := s.proc.PID
		st := procStatus(t, fmt.Sprintf("/proc/%d/status", pid))
		want := fmt.Sprint(uid)
		for _, k := range []string{"Uid", "Gid"} {
			if f := strings.Fields(st[k]); len(f) != 4 || slices.IndexFunc(f, func(x string) bool { return x != want }) >= 0 {
				t.Errorf("Firecracker's %s %q, want all %s", k, st[k], want)
			}
		}
		if st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
			t.Errorf("Firecracker has capabilities: effective %s, permitted %s", st["CapEff"], st["CapPrm"])
		}
		if sc := threadsSeccomp(t, pid); slices.IndexFunc(slices.Collect(maps.Keys(sc)), func(k string) bool { return strings.HasPrefix(k, "fc_api/") && sc[k] == "2" }) < 0 {
			t.Errorf("the API thread is not under a seccomp filter: %v", sc)
		}
		if !(procwatch.Proc{PID: pid}).InRoot(root) {
			t.Errorf("/proc/%d/root is not the chroot %s", pid, root)
		}
		// Both sockets exist before InstanceStart takes /run back.
		for _, sock := range []string{APISocketPath(cfg.Dir), VsockPath(cfg.Dir)} {
			if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Errorf("%s is not a socket before InstanceStart: %v", sock, err)
			}
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); !strings.HasSuffix(exe, "firecracker") {
			t.Errorf("pid %d runs %q: the jailer did not exec Firecracker in place", pid, exe)
		}
		// A sweep of leftover chroots keeps the one a process runs in.
		if gone := SweepJails(cfg.Jail.BaseDir); len(gone) != 0 {
			t.Errorf("SweepJails removed %v while Firecracker runs in it", gone)
		}
		// A restarted daemon knows the pid, start time and run dir only.
		a, err := Adopt(pid, s.proc.StartTime, cfg.Dir)
		if err != nil {
			t.Errorf("Adopt of the jailed Firecracker: %v", err)
		} else {
			if !a.Jailed || a.jailDir != jailDir {
				t.Errorf("adopted: jailed %v in %q, want %q", a.Jailed, a.jailDir, jailDir)
			}
			if _, err := a.Client().InstanceInfo(context.Background()); err != nil {
				t.Errorf("the adopted process's API through the run dir: %v", err)
			}
			a.Release()
		}
		if _, err := Adopt(pid, s.proc.StartTime, t.TempDir()); !errors.Is(err, ErrNotOurs) {
			t.Errorf("Adopt with another run dir: %v, want ErrNotOurs", err)
		}
	}
	t.Cleanup(func() { afterStep = nil })

	p, err := Start(context.Background(), cfg)
	afterStep = nil
	if !checked {
		t.Fatalf("Start did not get to the vsock step: %v", err)
	}
	pid := 0
	if err != nil {
		var se *StepError
		if !errors.As(err, &se) || se.Step != StepInstanceStart {
			t.Fatalf("Start failed before InstanceStart: %v", err)
		}
		if !errors.Is(err, ErrKVM) {
			t.Fatalf("InstanceStart failed, but not for KVM: %v", err)
		}
		pid = se.PID
	} else {
		t.Log("KVM is usable: the jailed VM booted the stub kernel")
		pid = p.PID
		if !p.Jailed {
			t.Error("Process.Jailed is false")
		}
		// Booted: every thread, the VMM and vCPU ones too, is filtered.
		for th, mode := range threadsSeccomp(t, pid) {
			if mode != "2" {
				t.Errorf("thread %s: Seccomp %q, want 2", th, mode)
			}
		}
		if fi, err := os.Stat(VsockPath(cfg.Dir)); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("the vsock socket is not reachable from the run dir: %v", err)
		}
		// The guest runs: the jail may no longer change its /run.
		var rs syscall.Stat_t
		if err := syscall.Stat(filepath.Join(root, "run"), &rs); err != nil || rs.Uid != 0 || rs.Mode&0o022 != 0 {
			t.Errorf("the chroot's /run is uid %d mode %o (%v) once booted, want root's and not writable by others", rs.Uid, rs.Mode&0o777, err)
		}
		if _, err := p.Client().InstanceInfo(context.Background()); err != nil {
			t.Errorf("the API after /run was taken back: %v", err)
		}
		if err := p.Stop(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	assertGone(t, pid, cfg.Dir)
	assertJailGone(t, cfg, jailDir)
	var st syscall.Stat_t
	if err := syscall.Stat(disk, &st); err != nil || st.Uid != 0 {
		t.Errorf("the disk was not handed back to root: uid %d, %v", st.Uid, err)
	}
}

// TestRealJailedFirecrackerFailedStart fails InstanceStart on purpose (a
// kernel that is not an ELF) and checks that the failed start leaves
// nothing of the jail.
func TestRealJailedFirecrackerFailedStart(t *testing.T) {
	cfg, disk := jailedConfig(t, 0x7A00FFF2)
	if err := os.WriteFile(cfg.Kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), cfg)
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepInstanceStart || se.PID == 0 {
		t.Fatalf("Start: %v, want a failure at %s after spawning", err, StepInstanceStart)
	}
	assertGone(t, se.PID, cfg.Dir)
	assertJailGone(t, cfg, filepath.Join(cfg.Jail.BaseDir, "firecracker", cfg.Name))
	var st syscall.Stat_t
	if err := syscall.Stat(disk, &st); err != nil || st.Uid != 0 {
		t.Errorf("the disk was not handed back to root: uid %d, %v", st.Uid, err)
	}
}

// TestRealJailedTapHandedOver gives the jail a tap made for root (as
// netmgr makes them for a root bangerd): Start hands it to the jail's uid
// and the jailed Firecracker attaches to it.
func TestRealJailedTapHandedOver(t *testing.T) {
	cfg, _ := jailedConfig(t, 0)
	p, err := Start(context.Background(), cfg)
	var se *StepError
	if errors.As(err, &se) && se.Step != StepInstanceStart {
		t.Fatalf("Start: %v, want the tap handed over and every pre-boot call to pass", err)
	}
	dev := filepath.Join(sysClassNet, cfg.Net.Tap)
	if !tapOpenableBy(dev, cfg.Jail.UID, cfg.Jail.GID) {
		b, _ := os.ReadFile(filepath.Join(dev, "owner"))
		t.Errorf("tap owner %q, want the jail's uid %d", b, cfg.Jail.UID)
	}
	pid := 0
	if err == nil {
		pid = p.PID
		if err := p.Stop(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	} else {
		pid = se.PID
	}
	assertGone(t, pid, cfg.Dir)
	assertJailGone(t, cfg, filepath.Join(cfg.Jail.BaseDir, "firecracker", cfg.Name))
}

// TestRealJailedStrayCleanup is a daemon that dies mid-start: its successor
// knows only the run dir, and CleanupJail must find the jailed Firecracker
// by its chroot, kill it and remove the chroot.
func TestRealJailedStrayCleanup(t *testing.T) {
	cfg, _ := jailedConfig(t, 0x7A00FFF2)
	jailDir := filepath.Join(cfg.Jail.BaseDir, "firecracker", cfg.Name)
	pid, killed := 0, 0
	afterStep = func(s *starter, step string) {
		if s.cfg.Name == cfg.Name && step == StepPutDrives {
			pid = s.proc.PID
			killed = CleanupJail(cfg.Dir)
		}
	}
	t.Cleanup(func() { afterStep = nil })
	_, err := Start(context.Background(), cfg)
	afterStep = nil
	if err == nil || killed != 1 {
		t.Fatalf("CleanupJail killed %d processes, Start: %v; want 1 and a failed start", killed, err)
	}
	assertGone(t, pid, cfg.Dir)
	assertJailGone(t, cfg, jailDir)
}

func assertJailGone(t *testing.T, cfg Config, jailDir string) {
	t.Helper()
	if _, err := os.Lstat(jailDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("chroot %s left behind (%v)", jailDir, err)
	}
	for _, p := range []string{LogPath(cfg.Dir), MetricsPath(cfg.Dir)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("link %s left behind (%v)", p, err)
		}
	}
	// No --cgroup is passed, so the jailer must have made no cgroup.
	for _, pat := range []string{"/sys/fs/cgroup/firecracker/" + cfg.Name, "/sys/fs/cgroup/*/firecracker/" + cfg.Name} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			t.Errorf("cgroup %v left behind", m)
		}
	}
}
