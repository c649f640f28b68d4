package fcproc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// These tests drive the real Firecracker named by BANGER_TEST_FIRECRACKER.
//
// Firecracker accepts any file at PUT /boot-source and only loads the kernel
// at InstanceStart, before it touches KVM; a file that is not an x86_64 ELF
// fails there with "Unable to read elf header". stubKernel writes the
// smallest ELF it loads: one PT_LOAD segment at 16 MiB holding "hlt; jmp $-1".

func realFirecracker(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("BANGER_TEST_FIRECRACKER")
	if bin == "" {
		t.Skip("BANGER_TEST_FIRECRACKER is not set; point it at a firecracker binary to run this test")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("BANGER_TEST_FIRECRACKER: %v", err)
	}
	return bin
}

func stubKernel(t testing.TB, dir string) string {
	t.Helper()
	const (
		loadAddr = 0x1000000
		codeOff  = 0x1000
	)
	code := []byte{0xf4, 0xeb, 0xfd} // hlt; jmp back to hlt
	buf := make([]byte, codeOff+len(code))
	copy(buf, "\x7fELF\x02\x01\x01") // 64-bit, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(buf[16:], 2)        // ET_EXEC
	le.PutUint16(buf[18:], 0x3e)     // EM_X86_64
	le.PutUint32(buf[20:], 1)        // EV_CURRENT
	le.PutUint64(buf[24:], loadAddr) // e_entry
	le.PutUint64(buf[32:], 64)       // e_phoff
	le.PutUint16(buf[52:], 64)       // e_ehsize
	le.PutUint16(buf[54:], 56)       // e_phentsize
	le.PutUint16(buf[56:], 1)        // e_phnum
	ph := buf[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], codeOff)
	le.PutUint64(ph[16:], loadAddr)
	le.PutUint64(ph[24:], loadAddr)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000)
	copy(buf[codeOff:], code)
	p := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sparseDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "root.ext4")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// makeTap creates a persistent tap owned by uid and deletes it at the end.
func makeTap(t *testing.T, uid int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a tap needs root")
	}
	name := "bgtest" + randomSuffix(t)
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		Queues:    1,
		Owner:     uint32(uid),
		Group:     uint32(uid),
	}
	if err := netlink.LinkAdd(tap); err != nil {
		t.Skipf("cannot create tap %s here: %v", name, err)
	}
	for _, f := range tap.Fds {
		f.Close()
	}
	t.Cleanup(func() {
		link, err := netlink.LinkByName(name)
		if err != nil {
			t.Errorf("tap %s vanished before the test deleted it: %v", name, err)
			return
		}
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete tap %s: %v", name, err)
		}
	})
	return name
}

func TestRealFirecrackerStart(t *testing.T) {
	bin := realFirecracker(t)
	tap := makeTap(t, 0)
	files := t.TempDir()
	cfg := Config{
		Name:      "bgtest-" + randomSuffix(t),
		Binary:    bin,
		Dir:       t.TempDir(),
		Kernel:    stubKernel(t, files),
		BootArgs:  "console=ttyS0 reboot=k panic=1",
		VCPUs:     1,
		MemoryMiB: 128,
		Drives:    []DriveConfig{{ID: "root", Path: sparseDisk(t, files), Root: true}},
		Net:       &NetConfig{Tap: tap, MAC: "06:00:ac:10:00:02"},
		VsockCID:  3,
		Timeouts:  Timeouts{CtrlAltDel: 200 * time.Millisecond},
	}
	// Leftovers of an earlier run must not get in the way.
	for _, s := range []string{APISocketPath(cfg.Dir), VsockPath(cfg.Dir)} {
		os.WriteFile(s, nil, 0o600)
	}
	p, err := Start(context.Background(), cfg)
	if err != nil {
		// No usable KVM: every pre-boot call must have passed, and the
		// failure must be the clear KVM error.
		var se *StepError
		if !errors.As(err, &se) || se.Step != StepInstanceStart {
			t.Fatalf("Start failed before InstanceStart: %v", err)
		}
		if !errors.Is(err, ErrKVM) {
			t.Fatalf("InstanceStart failed, but not for KVM: %v", err)
		}
		checkKVMText(t, err)
		assertGone(t, se.PID, cfg.Dir)
		assertTap(t, tap)
		checkLogInConsole(t, cfg.Dir)
		return
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	checkLogInConsole(t, cfg.Dir)
	// KVM is usable here: the stub kernel runs (halted) until killed.
	t.Logf("KVM is usable: the VM started; config duration %v", p.ConfigDuration)
	logSteps(t, p)
	info, err := p.Client().InstanceInfo(context.Background())
	if err != nil || info.State != "Running" || info.ID != cfg.Name {
		t.Errorf("instance info %+v, %v", info, err)
	}
	if fi, err := os.Stat(VsockPath(cfg.Dir)); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("vsock socket not there: %v", err)
	}
	if err := p.Stop(context.Background(), nil); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, p.PID, cfg.Dir)
	assertTap(t, tap)
}

// checkLogInConsole: without FirecrackerLog, no firecracker.log is made
// and Firecracker's own log lines land in console.log.
func checkLogInConsole(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(LogPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists though FirecrackerLog is off (%v)", LogPath(dir), err)
	}
	b, _ := os.ReadFile(ConsoleLogPath(dir))
	if !strings.Contains(string(b), `Put request on "/machine-config"`) {
		t.Errorf("console.log does not hold Firecracker's log of PUT /machine-config:\n%s", b)
	}
}

// TestRealFirecrackerWithoutKVMAccess runs Firecracker as nobody, who may not
// open /dev/kvm, so the KVM failure is seen even on a host with KVM.
func TestRealFirecrackerWithoutKVMAccess(t *testing.T) {
	bin := realFirecracker(t)
	if os.Geteuid() != 0 {
		t.Skip("switching Firecracker to user nobody needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	const nobody = 65534
	if f, err := os.Stat("/dev/kvm"); err == nil && f.Mode().Perm()&0o006 == 0o006 {
		t.Skip("/dev/kvm is open to everyone here, so nobody can use it")
	}
	// nobody must reach and write the VM directory.
	root, err := os.MkdirTemp("", "fcproc-nokvm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o777); err != nil {
		t.Fatal(err)
	}
	disk := sparseDisk(t, root)
	if err := os.Chown(disk, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(root, "firecracker-as-nobody")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --reuid=%d --regid=%d --clear-groups %s \"$@\"\n", setpriv, nobody, nobody, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Name:      "bgtest-nokvm",
		Binary:    wrapper,
		Dir:       root,
		Kernel:    stubKernel(t, root),
		VCPUs:     1,
		MemoryMiB: 128,
		Drives:    []DriveConfig{{ID: "root", Path: disk, Root: true}},
		// No network: an unprivileged Firecracker cannot open /dev/net/tun
		// on a host where it is root-only.
		VsockCID: 3,
		// Its log and metrics files, to check every call below.
		FirecrackerLog: true,
		Metrics:        true,
	}
	_, err = Start(context.Background(), cfg)
	if err == nil {
		t.Fatal("Start succeeded although Firecracker ran as nobody")
	}
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepInstanceStart {
		t.Fatalf("Start failed before InstanceStart: %v", err)
	}
	if !errors.Is(err, ErrKVM) {
		t.Fatalf("not a KVM error: %v", err)
	}
	checkKVMText(t, err)
	t.Logf("error as the user sees it: %v", err)
	t.Logf("spawn to InstanceStart answer: %v", sinceSpawn(se.Steps))
	assertGone(t, se.PID, cfg.Dir)
	// Every pre-boot call reached Firecracker and succeeded.
	log, _ := os.ReadFile(LogPath(cfg.Dir))
	for _, path := range []string{"/metrics", "/machine-config", "/boot-source", "/drives/root", "/vsock"} {
		if !strings.Contains(string(log), `Put request on "`+path+`"`) {
			t.Errorf("firecracker.log shows no PUT %s", path)
		}
	}
	if n := strings.Count(string(log), "Status code: 204 No Content"); n < 5 {
		t.Errorf("firecracker.log shows %d successful calls, want at least 5:\n%s", n, log)
	}
}

// sinceSpawn adds up the step durations from spawn on.
func sinceSpawn(steps []StepTrace) time.Duration {
	var d time.Duration
	on := false
	for _, s := range steps {
		on = on || s.Name == StepSpawn
		if on {
			d += s.Duration
		}
	}
	return d
}

func checkKVMText(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	const prefix = "start VM: Firecracker could not use KVM (Start microvm error: Kvm error: "
	const suffix = "): /dev/kvm is missing or not accessible — load the kvm module and give this user access to /dev/kvm, or use vmm = \"qemu\""
	if !strings.HasPrefix(msg, prefix) || !strings.HasSuffix(msg, suffix) || strings.Contains(msg, "\n") {
		t.Errorf("KVM error text is\n%s", msg)
	}
}

func assertTap(t *testing.T, name string) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Errorf("tap %s is gone after the VM: %v", name, err)
		return
	}
	if _, ok := link.(*netlink.Tuntap); !ok {
		t.Errorf("%s is now a %s, not our tap", name, link.Type())
	}
}

func logSteps(t *testing.T, p *Process) {
	t.Helper()
	var b strings.Builder
	for _, s := range p.Steps {
		fmt.Fprintf(&b, " %s=%v", s.Name, s.Duration.Round(10*time.Microsecond))
	}
	t.Logf("steps:%s", b.String())
}

// TestMissingTapRefusedBeforeSpawn uses the host's real /sys/class/net.
func TestMissingTapRefusedBeforeSpawn(t *testing.T) {
	bin := os.Getenv("BANGER_TEST_FIRECRACKER")
	if bin == "" {
		bin = fakeBinary(t, nil)
	}
	cfg := testConfig(t, bin)
	cfg.Net.Tap = "bgnone" + randomSuffix(t)
	_, err := Start(context.Background(), cfg)
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepCheckTap || se.PID != 0 {
		t.Fatalf("Start = %v, want a check-tap failure with nothing spawned", err)
	}
	if !strings.Contains(err.Error(), cfg.Net.Tap) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("error does not say which tap is missing: %v", err)
	}
	for _, f := range []string{ConsoleLogName, APISocketName, "fake.pid"} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists: Firecracker was spawned", f)
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", cfg.Net.Tap)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tap %s exists after the refused start", cfg.Net.Tap)
	}
}

// TestRealFirecrackerConfigDuration logs how long configuration takes with
// the real binary over a few starts (no timed assertion; the goal is 50 ms).
func TestRealFirecrackerConfigDuration(t *testing.T) {
	bin := realFirecracker(t)
	files := t.TempDir()
	kernel := stubKernel(t, files)
	disk := sparseDisk(t, files)
	for i := 0; i < 5; i++ {
		cfg := Config{
			Name: fmt.Sprintf("bgbench-%d", i), Binary: bin, Dir: t.TempDir(),
			Kernel: kernel, VCPUs: 1, MemoryMiB: 128,
			Drives:   []DriveConfig{{ID: "root", Path: disk, Root: true, ReadOnly: true}},
			VsockCID: 3,
			Timeouts: Timeouts{CtrlAltDel: 100 * time.Millisecond},
		}
		p, err := Start(context.Background(), cfg)
		if err != nil {
			var se *StepError
			if !errors.As(err, &se) || !errors.Is(err, ErrKVM) {
				t.Fatalf("start %d: %v", i, err)
			}
			t.Logf("start %d: no KVM; spawn to InstanceStart answer took %v", i, sinceSpawn(se.Steps))
			continue
		}
		t.Logf("start %d: config duration %v", i, p.ConfigDuration)
		logSteps(t, p)
		if err := p.Stop(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		assertGone(t, p.PID, cfg.Dir)
	}
}

func TestSpawnArgsKeepSeccomp(t *testing.T) {
	args := spawnArgs("/run/vm/fc.sock", "vm1")
	for _, a := range args {
		if strings.Contains(a, "seccomp") {
			t.Errorf("argv %q touches Firecracker's seccomp filters", args)
		}
	}
	if !cmdlineHasAPISock(args, "/run/vm/fc.sock") {
		t.Errorf("argv %q: Adopt would not recognise it", args)
	}
}

// TestRealFirecrackerSeccomp checks that the Firecracker fcproc spawns runs
// its threads under seccomp filters: the API thread has its filter as soon
// as the API answers.
func TestRealFirecrackerSeccomp(t *testing.T) {
	bin := realFirecracker(t)
	dir := t.TempDir()
	s := &starter{
		cfg:     Config{Name: "bgseccomp-" + randomSuffix(t), Binary: bin, Dir: dir},
		t:       Timeouts{}.withDefaults(),
		log:     slog.New(slog.DiscardHandler),
		apiSock: APISocketPath(dir),
		vsock:   VsockPath(dir),
	}
	ctx := context.Background()
	if err := s.spawn(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.proc.kill()
	if err := s.waitAPI(ctx); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.proc.PID))
	if err != nil {
		t.Fatal(err)
	}
	filtered := map[string]string{}
	for _, task := range tasks {
		base := fmt.Sprintf("/proc/%d/task/%s/", s.proc.PID, task.Name())
		comm, _ := os.ReadFile(base + "comm")
		status, _ := os.ReadFile(base + "status")
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "Seccomp:"); ok {
				filtered[strings.TrimSpace(string(comm))] = strings.TrimSpace(v)
			}
		}
	}
	if filtered["fc_api"] != "2" {
		t.Errorf("Firecracker's API thread is not under a seccomp filter: threads and Seccomp modes %v", filtered)
	}
}
