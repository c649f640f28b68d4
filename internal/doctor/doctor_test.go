package doctor_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/doctor"
)

// fakeHost is a host tree under a temp root and a PATH of fake programs.
type fakeHost struct {
	t    *testing.T
	root string
	bin  string
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	d := t.TempDir()
	f := &fakeHost{t: t, root: filepath.Join(d, "root"), bin: filepath.Join(d, "bin")}
	for _, p := range []string{f.root, f.bin} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeHost) host(uid int) doctor.Host {
	return doctor.Host{Root: f.root, Path: f.bin, UID: uid}
}

// file makes a file (content != "") or, for content "", a directory under the root.
func (f *fakeHost) add(path, content string) {
	f.t.Helper()
	p := filepath.Join(f.root, path)
	var err error
	if content == "" {
		err = os.MkdirAll(p, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
		err = os.WriteFile(p, []byte(content), 0o644)
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

// program puts a shell script called name on the fake PATH.
func (f *fakeHost) program(name, script string) string {
	f.t.Helper()
	p := filepath.Join(f.bin, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func settings(t *testing.T) *doctor.Settings {
	state := t.TempDir()
	return &doctor.Settings{VMM: "auto", COW: "auto", StateDir: state, SSHKeyPath: filepath.Join(state, "ssh", "id_ed25519")}
}

func find(t *testing.T, rs []doctor.Result, name string) doctor.Result {
	t.Helper()
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no %q check in %+v", name, rs)
	return doctor.Result{}
}

func absent(t *testing.T, rs []doctor.Result, names ...string) {
	t.Helper()
	for _, r := range rs {
		for _, n := range names {
			if r.Name == n {
				t.Errorf("check %q ran, want it left out: %+v", n, r)
			}
		}
	}
}

// expect checks a result's status and that its detail and fix contain the given texts.
func expect(t *testing.T, r doctor.Result, st doctor.Status, detail, fix string) {
	t.Helper()
	if r.Status != st {
		t.Errorf("%s: status %s, want %s (%s)", r.Name, r.Status, st, r.Detail)
	}
	if !strings.Contains(r.Detail, detail) {
		t.Errorf("%s: detail %q does not contain %q", r.Name, r.Detail, detail)
	}
	if !strings.Contains(r.Fix, fix) {
		t.Errorf("%s: fix %q does not contain %q", r.Name, r.Fix, fix)
	}
	if st == doctor.OK && r.Fix != "" {
		t.Errorf("%s: ok with a fix %q", r.Name, r.Fix)
	}
	if st != doctor.OK && r.Fix == "" {
		t.Errorf("%s: %s without a fix", r.Name, st)
	}
}

func run(h doctor.Host, s *doctor.Settings) []doctor.Result {
	return doctor.Run(context.Background(), doctor.Inputs{Host: h, Config: s, ConfigPath: "/etc/banger.toml"})
}

func TestBareHostHasNoVMM(t *testing.T) {
	f := newFakeHost(t)
	rs := run(f.host(1000), settings(t))
	expect(t, find(t, rs, "kvm"), doctor.Warn, "/dev/kvm does not exist", "modprobe kvm_intel")
	expect(t, find(t, rs, "firecracker"), doctor.Warn, "firecracker is not on PATH", "set firecracker_bin")
	expect(t, find(t, rs, "qemu"), doctor.Warn, "qemu-system-x86_64 is not on PATH", "apt install qemu-system-x86")
	expect(t, find(t, rs, "vmm"), doctor.Fail, "no VMM can run", "qemu_bin")
	expect(t, find(t, rs, "helper"), doctor.Warn, "not probed", "config check")
	expect(t, find(t, rs, "device-mapper"), doctor.Warn, "/dev/mapper/control does not exist", "modprobe dm_snapshot")
	expect(t, find(t, rs, "loop"), doctor.Warn, "no /dev/loop-control", "modprobe loop")
	expect(t, find(t, rs, "tun"), doctor.Warn, "no /dev/net/tun", "modprobe tun")
	expect(t, find(t, rs, "bridge"), doctor.Warn, "not loaded", "modprobe bridge")
	// banger programs nftables through netlink: no nft binary is needed.
	absent(t, rs, "nftables")
	expect(t, find(t, rs, "ip-forward"), doctor.Warn, "cannot read net.ipv4.ip_forward", "sysctl -w net.ipv4.ip_forward=1")
	expect(t, find(t, rs, "tools"), doctor.Warn, "mkfs.ext4, mmdebstrap, newuidmap, newgidmap, apt-get not found", "apt install e2fsprogs mmdebstrap uidmap apt")
	absent(t, rs, "daemon")
	if !doctor.Failed(rs) {
		t.Fatal("Failed is false on a host with no VMM")
	}
	if n := doctor.Count(rs); n[doctor.Fail] != 1 {
		t.Fatalf("counts %v, want exactly one failure", n)
	}
}

func TestFullHostIsOK(t *testing.T) {
	f := newFakeHost(t)
	f.add("dev/kvm", "x")
	f.add("dev/mapper/control", "x")
	f.add("sys/module/dm_snapshot", "")
	f.add("dev/loop-control", "x")
	f.add("dev/net/tun", "x")
	f.add("sys/module/bridge", "")
	f.add("sys/module/nf_tables", "")
	f.add("proc/sys/net/ipv4/ip_forward", "1\n")
	f.program("firecracker", `echo "Firecracker v1.14.2"; echo; echo "Supported snapshot data format versions: v8.0.0"`)
	f.program("qemu-system-x86_64", `echo "QEMU emulator version 8.2.2 (Debian 1:8.2.2)"; echo "Copyright (c) 2003-2023"`)
	for _, p := range []string{"mkfs.ext4", "debootstrap", "apt-get"} {
		f.program(p, "exit 0")
	}
	rs := run(f.host(0), settings(t))
	for _, name := range []string{"config", "kvm", "firecracker", "qemu", "vmm", "cow", "state-dir", "helper",
		"device-mapper", "loop", "tun", "bridge", "ip-forward", "tools"} {
		if r := find(t, rs, name); r.Status != doctor.OK && !(name == "state-dir" && strings.Contains(r.Detail, "only")) {
			t.Errorf("%s: %s: %s (fix: %s)", name, r.Status, r.Detail, r.Fix)
		}
	}
	expect(t, find(t, rs, "firecracker"), doctor.OK, "is Firecracker v1.14.2", "")
	expect(t, find(t, rs, "qemu"), doctor.OK, "is QEMU 8.2.2", "")
	expect(t, find(t, rs, "vmm"), doctor.OK, "auto picks firecracker", "")
	absent(t, rs, "nftables")
	expect(t, find(t, rs, "helper"), doctor.OK, "no helper needed", "")
	if doctor.Failed(rs) {
		t.Fatalf("Failed on a complete host: %+v", rs)
	}
}

func TestFirecrackerVersions(t *testing.T) {
	cases := []struct {
		script string
		status doctor.Status
		detail string
	}{
		{`echo "Firecracker v1.14.2"`, doctor.OK, "v1.14.2 (banger needs v1.14.0 or later, and is tested with v1.14.2)"},
		{`echo "Firecracker v1.14.0"`, doctor.OK, "is Firecracker v1.14.0"},
		{`echo "Firecracker v2.0.0-dev"`, doctor.OK, "is Firecracker v2.0.0-dev"},
		{`echo "Firecracker v1.13.9"`, doctor.Warn, "is Firecracker v1.13.9, older than v1.14.0"},
		{`echo "Firecracker v0.25.2"`, doctor.Warn, "older than v1.14.0, the oldest banger drives (tested with v1.14.2)"},
		{`echo "firecracker, some version"`, doctor.Warn, "its version cannot be told: unexpected version line"},
		{`echo "no kvm" >&2; exit 3`, doctor.Warn, "exit status 3: no kvm"},
	}
	for _, c := range cases {
		t.Run(c.detail, func(t *testing.T) {
			f := newFakeHost(t)
			f.add("dev/kvm", "x")
			f.program("firecracker", c.script)
			rs := run(f.host(0), settings(t))
			fix := ""
			if c.status != doctor.OK {
				fix = "Firecracker v1.14.2"
			}
			expect(t, find(t, rs, "firecracker"), c.status, c.detail, fix)
			// auto picks a found Firecracker whatever its version, as the daemon does.
			expect(t, find(t, rs, "vmm"), doctor.OK, "auto picks firecracker", "")
		})
	}
}

func TestFirecrackerBinSetting(t *testing.T) {
	f := newFakeHost(t)
	f.add("dev/kvm", "x")
	f.program("firecracker", `echo "Firecracker v1.14.2"`)
	qemu := f.program("qemu-system-x86_64", `echo "QEMU emulator version 7.2.15"`)
	s := settings(t)
	s.FirecrackerBin = filepath.Join(t.TempDir(), "nope")
	rs := run(f.host(0), s)
	// The setting wins over PATH, as in the daemon.
	expect(t, find(t, rs, "firecracker"), doctor.Warn, "firecracker_bin "+s.FirecrackerBin+" is not an executable file", "correct firecracker_bin")
	expect(t, find(t, rs, "vmm"), doctor.OK, "auto picks qemu ("+qemu+"): firecracker_bin", "")

	s.FirecrackerBin = filepath.Join(f.bin, "firecracker")
	s.QemuBin = filepath.Join(t.TempDir(), "qemu")
	rs = run(doctor.Host{Root: f.root, UID: 0}, s) // empty PATH: the settings alone find them
	expect(t, find(t, rs, "firecracker"), doctor.OK, "is Firecracker v1.14.2", "")
	expect(t, find(t, rs, "qemu"), doctor.Warn, "qemu_bin "+s.QemuBin+" is not an executable file", "correct qemu_bin")
}

func TestVMMChoice(t *testing.T) {
	cases := []struct {
		name          string
		want          string
		kvm, fc, qemu bool
		status        doctor.Status
		detail, fix   string
	}{
		{"auto without kvm", "auto", false, true, true, doctor.OK, "auto picks qemu", ""},
		{"auto without kvm says why", "auto", false, true, true, doctor.OK, "/dev/kvm does not exist (QEMU runs without it, under TCG: slower)", ""},
		{"auto without firecracker", "auto", true, false, true, doctor.OK, "firecracker is not on PATH", ""},
		{"auto with nothing", "auto", true, false, false, doctor.Fail, "no VMM can run: firecracker is not on PATH, and qemu-system-x86_64 is not on PATH", "install QEMU"},
		{"auto with firecracker but no kvm and no qemu", "auto", false, true, false, doctor.Fail, "no VMM can run: /dev/kvm does not exist", "make /dev/kvm usable"},
		{"firecracker without kvm", "firecracker", false, true, true, doctor.Fail, "vmm is firecracker but /dev/kvm does not exist", `vmm = "qemu"`},
		{"firecracker missing", "firecracker", true, false, true, doctor.Fail, "vmm is firecracker but firecracker is not on PATH", `vmm = "auto"`},
		{"firecracker", "firecracker", true, true, false, doctor.OK, "vmm = firecracker", ""},
		{"qemu missing", "qemu", true, true, false, doctor.Fail, "vmm = qemu, but qemu-system-x86_64 is not on PATH", "apt install qemu-system-x86"},
		{"qemu without kvm", "qemu", false, false, true, doctor.OK, "under TCG software emulation (slow): /dev/kvm does not exist", ""},
		{"qemu with kvm", "qemu", true, false, true, doctor.OK, "with KVM: /dev/kvm opens read-write", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			if c.kvm {
				f.add("dev/kvm", "x")
			}
			if c.fc {
				f.program("firecracker", `echo "Firecracker v1.14.2"`)
			}
			if c.qemu {
				f.program("qemu-system-x86_64", `echo "QEMU emulator version 7.2.15"`)
			}
			s := settings(t)
			s.VMM = c.want
			rs := run(f.host(0), s)
			expect(t, find(t, rs, "vmm"), c.status, c.detail, c.fix)
			if got := doctor.Failed(rs); got != (c.status == doctor.Fail) {
				t.Fatalf("Failed = %v", got)
			}
		})
	}
}

func TestKVMNotUsable(t *testing.T) {
	f := newFakeHost(t)
	f.add("dev/kvm", "") // a directory cannot be opened read-write
	rs := run(f.host(0), settings(t))
	expect(t, find(t, rs, "kvm"), doctor.Warn, "/dev/kvm is not usable by this user: is a directory", "modprobe kvm_intel")
}

func TestKVMPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: a mode-0000 /dev/kvm still opens, so the permission case cannot be shown")
	}
	f2 := newFakeHost(t)
	f2.add("dev/kvm", "x")
	if err := os.Chmod(filepath.Join(f2.root, "dev/kvm"), 0); err != nil {
		t.Fatal(err)
	}
	rs := run(f2.host(os.Geteuid()), settings(t))
	expect(t, find(t, rs, "kvm"), doctor.Warn, "permission denied", "usermod -aG kvm")
}

// fsOf names the filesystem of dir the way the tests need it.
func fsOf(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Type)
}

func TestCOWPicksDMSnapWhereDeviceMapperIsUsable(t *testing.T) {
	f := newFakeHost(t)
	s := settings(t)
	f.add("dev/mapper/control", "x")
	f.add("sys/module/dm_snapshot", "")
	f.add("dev/loop-control", "x")
	for _, cow := range []string{"auto", "dmsnap"} {
		s.COW = cow
		expect(t, find(t, run(f.host(0), s), "cow"), doctor.OK, "dmsnap", "")
	}
	// As a user the daemon cannot set snapshots up itself.
	s.COW = "auto"
	if r := find(t, run(f.host(1000), s), "cow"); strings.Contains(r.Detail, "dmsnap") {
		t.Fatalf("as a user auto picks dmsnap: %+v", r)
	}
}

func TestCOWWithoutReflink(t *testing.T) {
	f := newFakeHost(t)
	s := settings(t)
	if typ := fsOf(t, s.StateDir); typ != unix.EXT4_SUPER_MAGIC && typ != unix.TMPFS_MAGIC {
		t.Skipf("the temp dir is on filesystem %#x, which may support reflink; this test needs ext4 or tmpfs", typ)
	}
	cases := []struct {
		cow         string
		status      doctor.Status
		detail, fix string
	}{
		{"auto", doctor.OK, "auto picks copy: no usable device-mapper, and " + s.StateDir, ""},
		{"copy", doctor.OK, "cow = copy", ""},
		{"reflink", doctor.Fail, "cow = reflink, but " + s.StateDir, `cow = "auto"`},
		{"dmsnap", doctor.Fail, "cow = dmsnap: device-mapper snapshots are not available on this host", `cow = "auto"`},
	}
	for _, c := range cases {
		s.COW = c.cow
		rs := run(f.host(0), s)
		expect(t, find(t, rs, "cow"), c.status, c.detail, c.fix)
		expect(t, find(t, rs, "reflink"), doctor.Warn, "does not support reflink clones", "btrfs or XFS")
	}
	// The probe leaves nothing behind.
	if ents, err := os.ReadDir(s.StateDir); err != nil || len(ents) != 0 {
		t.Fatalf("state dir after doctor: %v %v", ents, err)
	}
}

// TestCOWWithReflink runs the probe on a real btrfs (or XFS) filesystem on a
// loop device.
func TestCOWWithReflink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a loop filesystem")
	}
	var mkfs []string
	if p, err := exec.LookPath("mkfs.btrfs"); err == nil {
		mkfs = []string{p, "-q"}
	} else if p, err := exec.LookPath("mkfs.xfs"); err == nil {
		mkfs = []string{p, "-q", "-m", "reflink=1"}
	} else {
		t.Skip("needs mkfs.btrfs or mkfs.xfs")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Skipf("%s: %v: %s", mkfs[0], err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount a filesystem here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	f := newFakeHost(t)
	s := settings(t)
	s.StateDir = filepath.Join(mnt, "state") // not made yet: its parent is probed
	for _, cow := range []string{"auto", "reflink"} {
		s.COW = cow
		rs := run(f.host(0), s)
		want := "auto picks reflink: " + mnt
		if cow == "reflink" {
			want = "cow = reflink: " + mnt
		}
		expect(t, find(t, rs, "cow"), doctor.OK, want, "")
		expect(t, find(t, rs, "reflink"), doctor.OK, "supports reflink clones", "")
	}
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Fatalf("mount point after doctor: %v %v", ents, err)
	}
}

func TestStateDirNotMadeYet(t *testing.T) {
	f := newFakeHost(t)
	s := settings(t)
	parent := s.StateDir
	s.StateDir = filepath.Join(parent, "a", "b")
	rs := run(f.host(0), s)
	r := find(t, rs, "state-dir")
	if !strings.Contains(r.Detail, "not made yet; measured at "+parent) || !strings.Contains(r.Detail, "free on") {
		t.Fatalf("state-dir detail %q", r.Detail)
	}
	if _, err := os.Stat(filepath.Join(parent, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("doctor made the state dir: %v", err)
	}
}

func TestSSHKey(t *testing.T) {
	f := newFakeHost(t)
	s := settings(t)
	expect(t, find(t, run(f.host(0), s), "ssh-key"), doctor.Warn, "made on first vm start", "ssh_key_path")

	if err := os.MkdirAll(filepath.Dir(s.SSHKeyPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.SSHKeyPath, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, find(t, run(f.host(0), s), "ssh-key"), doctor.Fail, "is not a usable private key", "unencrypted private key")

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.SSHKeyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, find(t, run(f.host(0), s), "ssh-key"), doctor.OK, "is a ssh-ed25519 key", "")
}

func TestConfigError(t *testing.T) {
	f := newFakeHost(t)
	cfgErr := errors.New(`config /x/config.toml:3: vmm = "kvm" is not allowed: use auto, firecracker or qemu`)
	rs := doctor.Run(context.Background(), doctor.Inputs{Host: f.host(0), ConfigPath: "/x/config.toml", ConfigErr: cfgErr})
	expect(t, find(t, rs, "config"), doctor.Fail, `config.toml:3: vmm = "kvm" is not allowed`, "banger config show")
	absent(t, rs, "vmm", "cow", "state-dir", "reflink", "ssh-key", "daemon")
	find(t, rs, "kvm") // host checks still run
	if !doctor.Failed(rs) {
		t.Fatal("a config error is not a failure")
	}

	rs = doctor.Run(context.Background(), doctor.Inputs{Host: f.host(0), ConfigPath: "/x/config.toml", ConfigFound: true, Config: settings(t)})
	expect(t, find(t, rs, "config"), doctor.OK, "/x/config.toml is valid", "")
}

func TestDaemon(t *testing.T) {
	cases := []struct {
		d           doctor.Daemon
		status      doctor.Status
		detail, fix string
	}{
		{doctor.Daemon{Socket: "/run/b.sock"}, doctor.Warn, "not running on /run/b.sock: the CLI starts it on demand", "banger daemon start"},
		{doctor.Daemon{Running: true, Version: "v1", API: 1, PID: 42, Socket: "/s"}, doctor.OK, "bangerd v1 is running (pid 42)", ""},
		{doctor.Daemon{Running: true, Version: "v0", API: 1, PID: 42}, doctor.Warn, "another build than this CLI (v1)", "banger daemon restart"},
		{doctor.Daemon{Running: true, Version: "v2", API: 2, PID: 42}, doctor.Fail, "speaks API version 2, this CLI speaks 1", "banger daemon restart"},
		{doctor.Daemon{Err: errors.New("GET /v1/version: 500")}, doctor.Fail, "cannot talk to bangerd: GET /v1/version: 500", "banger daemon logs"},
	}
	f := newFakeHost(t)
	for _, c := range cases {
		d := c.d
		rs := doctor.Run(context.Background(), doctor.Inputs{Host: f.host(0), Config: settings(t), Daemon: &d, CLIVersion: "v1", APIVersion: 1})
		expect(t, find(t, rs, "daemon"), c.status, c.detail, c.fix)
	}
}

func TestToolsOffPath(t *testing.T) {
	f := newFakeHost(t)
	for _, p := range []string{"usr/sbin/mkfs.ext4", "usr/sbin/debootstrap"} {
		f.add(p, "#!/bin/sh\n")
		if err := os.Chmod(filepath.Join(f.root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.program("apt-get", "exit 0")
	rs := run(f.host(0), settings(t))
	expect(t, find(t, rs, "tools"), doctor.Warn, filepath.Join(f.root, "usr/sbin/mkfs.ext4")+", "+filepath.Join(f.root, "usr/sbin/debootstrap")+" found but not on PATH",
		"add "+filepath.Join(f.root, "usr/sbin")+" to PATH")
}

func TestIPForwardValues(t *testing.T) {
	f := newFakeHost(t)
	f.add("proc/sys/net/ipv4/ip_forward", "0\n")
	expect(t, find(t, run(f.host(0), nil), "ip-forward"), doctor.Warn, "net.ipv4.ip_forward is 0", "sysctl -w net.ipv4.ip_forward=1")
	f.add("proc/sys/net/ipv4/ip_forward", "1\n")
	expect(t, find(t, run(f.host(0), nil), "ip-forward"), doctor.OK, "net.ipv4.ip_forward is 1", "")
}

// TestIPForwardInNetns reads the real /proc/sys/net/ipv4/ip_forward in a
// fresh network namespace, set to 0 there first (a new namespace takes
// the host's value, which a root bangerd or anything else may have set to
// 1), then set to 1 there.
func TestIPForwardInNetns(t *testing.T) {
	type out struct {
		before, after doctor.Result
		err           error
	}
	ch := make(chan out, 1)
	go func() {
		// The thread stays locked and dies with this goroutine, so its
		// network namespace never leaks into other goroutines.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- out{err: err}
			return
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644); err != nil {
			ch <- out{err: err}
			return
		}
		h := doctor.Host{Root: "/", UID: 0}
		var o out
		o.before = find(t, doctor.Run(context.Background(), doctor.Inputs{Host: h}), "ip-forward")
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
			o.err = err
		}
		o.after = find(t, doctor.Run(context.Background(), doctor.Inputs{Host: h}), "ip-forward")
		ch <- o
	}()
	o := <-ch
	if errors.Is(o.err, unix.EPERM) {
		t.Skip("cannot make a network namespace here (needs CAP_SYS_ADMIN)")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	expect(t, o.before, doctor.Warn, "net.ipv4.ip_forward is 0", "sysctl")
	expect(t, o.after, doctor.OK, "net.ipv4.ip_forward is 1", "")
}

func TestJSONShape(t *testing.T) {
	f := newFakeHost(t)
	rs := run(f.host(1000), settings(t))
	data, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rs) {
		t.Fatalf("%d entries, want %d", len(got), len(rs))
	}
	for _, e := range got {
		if len(e) != 4 {
			t.Errorf("entry %v: want exactly name, status, detail, fix", e)
		}
		for _, k := range []string{"name", "status", "detail", "fix"} {
			if _, ok := e[k].(string); !ok {
				t.Errorf("entry %v: %s is not a string", e, k)
			}
		}
		switch e["status"] {
		case "ok", "warn", "fail":
		default:
			t.Errorf("entry %v: bad status", e)
		}
	}
}

// TestHelperFindings covers what doctor says about the helper for a user's
// banger: missing, of another protocol, another build, or fine; and that
// network = bridge makes a missing helper a failure.
func TestHelperFindings(t *testing.T) {
	f := newFakeHost(t)
	withHelper := func(hp *doctor.Helper, network string) []doctor.Result {
		s := settings(t)
		s.Network = network
		return doctor.Run(context.Background(), doctor.Inputs{Host: f.host(1000), Config: s, ConfigPath: "/etc/banger.toml",
			Helper: hp, CLIVersion: "v1"})
	}
	gone := &doctor.Helper{Socket: "/run/banger/helper.sock", Want: 2, Err: errors.New("connection refused")}
	expect(t, find(t, withHelper(gone, "auto"), "helper"), doctor.Warn, "not usable on /run/banger/helper.sock: connection refused", "systemctl enable --now banger-helper")
	expect(t, find(t, withHelper(gone, "bridge"), "helper"), doctor.Fail, "user-mode networking", "helper-users")
	old := &doctor.Helper{Socket: "/s", Version: "v0", Protocol: 1, Want: 2}
	expect(t, find(t, withHelper(old, "auto"), "helper"), doctor.Warn, "speaks protocol 1, this build 2", "restart banger-helper")
	other := &doctor.Helper{Socket: "/s", Version: "v0", Protocol: 2, Want: 2}
	expect(t, find(t, withHelper(other, "auto"), "helper"), doctor.Warn, "build v0, this CLI v1", "restart banger-helper")
	good := &doctor.Helper{Socket: "/s", Version: "v1", Protocol: 2, Want: 2, Snapshots: "no device-mapper"}
	rs := withHelper(good, "auto")
	expect(t, find(t, rs, "helper"), doctor.OK, "answers (build v1)", "")
	if c := find(t, rs, "cow"); strings.Contains(c.Detail, "picks dmsnap") {
		t.Errorf("cow with a helper that has no snapshots: %q", c.Detail)
	}
	dm := *good
	dm.Snapshots = ""
	if c := find(t, withHelper(&dm, "auto"), "cow"); !strings.Contains(c.Detail, "picks dmsnap") {
		t.Errorf("cow with a helper that makes snapshots: %q", c.Detail)
	}
}

// TestPVMHost is this host class: /dev/kvm from the kvm_pvm module, built
// in. doctor says that only QEMU under TCG boots, auto picks it in
// bangerd's words, and vmm = firecracker is refused with the reason.
func TestPVMHost(t *testing.T) {
	f := newFakeHost(t)
	f.add("dev/kvm", "x")
	f.add("sys/module/kvm", "")
	f.add("sys/module/kvm_pvm/parameters", "")
	f.program("firecracker", `echo "Firecracker v1.14.2"`)
	qemu := f.program("qemu-system-x86_64", `echo "QEMU emulator version 7.2.15"`)
	s := settings(t)
	rs := run(f.host(0), s)
	const pvm = "/dev/kvm comes from the kvm_pvm module (PVM: KVM without hardware virtualisation), on which QEMU with KVM aborts and a Firecracker guest never boots"
	expect(t, find(t, rs, "kvm"), doctor.Warn, "QEMU under TCG only (slow), no Firecracker: "+pvm, "kvm_intel or kvm_amd")
	expect(t, find(t, rs, "vmm"), doctor.OK, "auto picks qemu ("+qemu+"): "+pvm+" (QEMU runs without it, under TCG: slower)", "")
	expect(t, find(t, rs, "firecracker"), doctor.OK, "is Firecracker v1.14.2", "")
	s.VMM = "firecracker"
	rs = run(f.host(0), s)
	expect(t, find(t, rs, "vmm"), doctor.Fail, "vmm is firecracker but "+pvm, "only QEMU under TCG boots on this host")
	s.VMM = "qemu"
	expect(t, find(t, run(f.host(0), s), "vmm"), doctor.OK, "vmm = qemu: "+qemu+", under TCG software emulation (slow): "+pvm, "")
}

func TestDeviceMapperStates(t *testing.T) {
	cases := []struct {
		name        string
		files       map[string]string
		status      doctor.Status
		detail, fix string
	}{
		{"node missing", map[string]string{"proc/misc": "236 device-mapper\n"}, doctor.Warn, "the kernel has device-mapper but /dev/mapper/control is missing", "dmsetup mknodes"},
		{"node unusable", map[string]string{"dev/mapper/control": "", "sys/module/dm_snapshot": ""}, doctor.Warn, "device-mapper is not usable on this host (open /dev/mapper/control: is a directory)", "modprobe dm_mod dm_snapshot"},
		{"no target", map[string]string{"dev/mapper/control": "x"}, doctor.Warn, "device-mapper is loaded but its snapshot target is not", "modprobe dm_snapshot"},
		{"ok", map[string]string{"dev/mapper/control": "x", "sys/module/dm_snapshot": ""}, doctor.OK, "/dev/mapper/control and the snapshot target are present", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeHost(t)
			for p, content := range c.files {
				f.add(p, content)
			}
			expect(t, find(t, run(f.host(0), settings(t)), "device-mapper"), c.status, c.detail, c.fix)
		})
	}
}
