package hostprobe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRoot is a host tree under a temp dir; add makes a file (content
// != "") or a directory (content "") in it.
type fakeRoot struct {
	t    *testing.T
	root string
}

func newFakeRoot(t *testing.T) *fakeRoot {
	return &fakeRoot{t: t, root: t.TempDir()}
}

func (f *fakeRoot) host() Host { return Host{Root: f.root, UID: 1000} }

func (f *fakeRoot) add(path, content string) {
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

func TestProbeKVM(t *testing.T) {
	cases := []struct {
		name   string
		files  map[string]string
		state  KVMState
		module string
		reason string
	}{
		{"absent", nil, KVMAbsent, "", "/dev/kvm does not exist"},
		{"intel", map[string]string{"dev/kvm": "x", "sys/module/kvm_intel": ""}, KVMUsable, "kvm_intel", "/dev/kvm opens read-write (kvm_intel)"},
		{"amd in /proc/modules", map[string]string{"dev/kvm": "x", "proc/modules": "kvm_amd 200704 0 - Live 0x0\nkvm 1 1 kvm_amd, Live 0x0\n"}, KVMUsable, "kvm_amd", "(kvm_amd)"},
		// This host class: built in, so only /sys/module shows it.
		{"pvm in sysfs", map[string]string{"dev/kvm": "x", "sys/module/kvm": "", "sys/module/kvm_pvm/parameters": ""}, KVMPVM, "kvm_pvm",
			"/dev/kvm comes from the kvm_pvm module (PVM: KVM without hardware virtualisation), on which QEMU with KVM aborts and a Firecracker guest never boots"},
		{"pvm as a module", map[string]string{"dev/kvm": "x", "proc/modules": "kvm_pvm 1 0 - Live 0x0\n"}, KVMPVM, "kvm_pvm", "kvm_pvm module"},
		{"pvm beside a hardware module", map[string]string{"dev/kvm": "x", "sys/module/kvm_pvm": "", "sys/module/kvm_intel": ""}, KVMUsable, "kvm_intel", "opens read-write"},
		{"pvm without /dev/kvm", map[string]string{"sys/module/kvm_pvm": ""}, KVMAbsent, "kvm_pvm", "/dev/kvm does not exist"},
		{"not openable", map[string]string{"dev/kvm": ""}, KVMBroken, "", "/dev/kvm is not usable by this user: is a directory"},
		// Not openable by this user on a PVM host: joining the kvm group
		// would not help, so the state is PVM, not no-access.
		{"pvm, not openable", map[string]string{"dev/kvm": "", "sys/module/kvm_pvm": ""}, KVMPVM, "kvm_pvm",
			"never boots (nor may this user open it: is a directory)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeRoot(t)
			for p, content := range c.files {
				f.add(p, content)
			}
			k := ProbeKVM(f.host())
			if k.State != c.state || k.Module != c.module || !strings.Contains(k.Reason, c.reason) {
				t.Fatalf("ProbeKVM = %+v; want %s, module %q, reason with %q", k, c.state, c.module, c.reason)
			}
			if (k.Err() == nil) != (c.state == KVMUsable) || (k.Err() != nil && k.Err().Error() != k.Reason) {
				t.Fatalf("Err() = %v for %+v", k.Err(), k)
			}
		})
	}
}

func TestProbeKVMNoAccess(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: a mode-0000 /dev/kvm still opens, so the permission case cannot be shown")
	}
	f := newFakeRoot(t)
	f.add("dev/kvm", "x")
	if err := os.Chmod(filepath.Join(f.root, "dev/kvm"), 0); err != nil {
		t.Fatal(err)
	}
	if k := ProbeKVM(f.host()); k.State != KVMNoAccess || !strings.Contains(k.Reason, "not usable by this user: permission denied") {
		t.Fatalf("ProbeKVM = %+v", k)
	}
}

// TestKVMAPICheck asks a device that is not KVM for its KVM API version.
func TestKVMAPICheck(t *testing.T) {
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no %s here: %v", os.DevNull, err)
	}
	defer f.Close()
	if err := checkKVMAPI(f); err == nil || !strings.Contains(err.Error(), "does not answer KVM_GET_API_VERSION") {
		t.Fatalf("checkKVMAPI(%s) = %v", os.DevNull, err)
	}
}

// TestProbeKVMRealHost checks the probe against what this host shows of
// itself: a kvm_pvm host must never be called usable.
func TestProbeKVMRealHost(t *testing.T) {
	k := ProbeKVM(System())
	_, statErr := os.Stat(KVMDevice)
	switch {
	case errors.Is(statErr, os.ErrNotExist):
		if k.State != KVMAbsent {
			t.Fatalf("no %s, yet %+v", KVMDevice, k)
		}
	case k.State == KVMAbsent:
		t.Fatalf("%s exists, yet %+v", KVMDevice, k)
	}
	_, pvmErr := os.Stat("/sys/module/kvm_pvm")
	_, intelErr := os.Stat("/sys/module/kvm_intel")
	_, amdErr := os.Stat("/sys/module/kvm_amd")
	if pvmErr == nil && intelErr != nil && amdErr != nil && k.Usable() {
		t.Fatalf("this host has kvm_pvm, yet %+v", k)
	}
	t.Logf("this host: %+v", k)
}

func TestProbeTUN(t *testing.T) {
	f := newFakeRoot(t)
	tun := ProbeTUN(f.host())
	if tun.Present || tun.Usable() || !strings.Contains(tun.Problem().Error(), "a VMM running as uid 1000 cannot open /dev/net/tun") {
		t.Fatalf("without a tun device: %+v, %v", tun, tun.Problem())
	}
	f.add("dev/net/tun", "")
	tun = ProbeTUN(f.host())
	if !tun.Present || tun.Usable() || !errors.Is(tun.Err, unix.EISDIR) || !strings.Contains(tun.Problem().Error(), "sudo chmod 0666 /dev/net/tun") {
		t.Fatalf("unopenable tun device: %+v, %v", tun, tun.Problem())
	}
	os.Remove(filepath.Join(f.root, "dev/net/tun"))
	f.add("dev/net/tun", "x")
	if tun = ProbeTUN(f.host()); !tun.Usable() || tun.Problem() != nil {
		t.Fatalf("usable tun device: %+v", tun)
	}
}

func TestProbeDeviceMapper(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		err   string // "" = snapshots can be made
	}{
		{"nothing", map[string]string{"dev/loop-control": "x"}, "no device-mapper: /dev/mapper/control does not exist and the kernel lists no device-mapper in /proc/misc; load it with modprobe dm_mod"},
		{"node missing", map[string]string{"dev/loop-control": "x", "proc/misc": "236 device-mapper\n237 loop-control\n"}, "the kernel has device-mapper but /dev/mapper/control is missing; create it with dmsetup mknodes"},
		{"node unusable", map[string]string{"dev/loop-control": "x", "dev/mapper/control": ""}, "device-mapper is not usable on this host (open /dev/mapper/control: is a directory): load the device-mapper modules (modprobe dm_mod dm_snapshot)"},
		{"no loop", map[string]string{"dev/mapper/control": "x", "sys/module/dm_snapshot": ""}, "no loop devices (/dev/loop-control is missing); load the loop module (modprobe loop)"},
		{"no target", map[string]string{"dev/loop-control": "x", "dev/mapper/control": "x"}, "device-mapper has no snapshot target; load it with modprobe dm_snapshot"},
		{"usable", map[string]string{"dev/loop-control": "x", "dev/mapper/control": "x", "sys/module/dm_snapshot": ""}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeRoot(t)
			for p, content := range c.files {
				f.add(p, content)
			}
			d := ProbeDeviceMapper(f.host())
			if c.err == "" {
				if d.Err != nil || !d.Loop || !d.Control || !d.Target {
					t.Fatalf("ProbeDeviceMapper = %+v, want usable", d)
				}
				return
			}
			if d.Err == nil || !errors.Is(d.Err, ErrNoSnapshots) || !strings.Contains(d.Err.Error(), c.err) {
				t.Fatalf("ProbeDeviceMapper = %+v, want an error with %q", d, c.err)
			}
		})
	}
}

// TestDMCall makes a device-mapper ioctl on a device that is not
// device-mapper's.
func TestDMCall(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no %s here: %v", os.DevNull, err)
	}
	defer unix.Close(fd)
	if err := dmCall(fd, dmVersionCmd, ""); !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("DM_VERSION on %s: %v, want ENOTTY", os.DevNull, err)
	}
}

func TestProbeReflink(t *testing.T) {
	if r := ProbeReflink(""); r.Err == nil || r.Supported {
		t.Fatalf("ProbeReflink(\"\") = %+v", r)
	}
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	r := ProbeReflink(filepath.Join(dir, "state", "not-yet"))
	if r.At != dir || r.Err != nil {
		t.Fatalf("ProbeReflink = %+v, want it made in %s", r, dir)
	}
	if st.Type == unix.EXT4_SUPER_MAGIC || st.Type == unix.TMPFS_MAGIC {
		if r.Supported {
			t.Fatalf("reflink on %s: %+v", FSName(int64(st.Type)), r)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("the probe left %v (%v)", ents, err)
	}
}

func TestProbeBinaries(t *testing.T) {
	bin := t.TempDir()
	write := func(name, script string) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := newFakeRoot(t)
	h := Host{Root: f.root, Path: bin, UID: 0}
	o := Options{Host: h, Versions: true}
	facts := Probe(context.Background(), o)
	if facts.Firecracker.Found() || facts.Firecracker.Err.Error() != "firecracker is not on PATH" ||
		facts.QEMU.Found() || facts.QEMU.Err.Error() != "qemu-system-x86_64 is not on PATH" {
		t.Fatalf("empty PATH: %+v %+v", facts.Firecracker, facts.QEMU)
	}
	fc := write("firecracker", `echo "Firecracker v1.13.1"`)
	write("qemu-system-x86_64", `echo "QEMU emulator version 7.2.15 (Debian)"`)
	facts = Probe(context.Background(), o)
	if facts.Firecracker.Path != fc || facts.Firecracker.Version != "v1.13.1" || !facts.Firecracker.TooOld || facts.QEMU.Version != "7.2.15" {
		t.Fatalf("on PATH: %+v %+v", facts.Firecracker, facts.QEMU)
	}
	o.FirecrackerBin, o.QemuBin = filepath.Join(bin, "nope"), fc+"x"
	facts = Probe(context.Background(), o)
	if facts.Firecracker.Err == nil || !strings.Contains(facts.Firecracker.Err.Error(), "firecracker_bin "+o.FirecrackerBin+" is not an executable file") ||
		facts.QEMU.Err == nil || !strings.Contains(facts.QEMU.Err.Error(), "qemu_bin "+o.QemuBin+" is not an executable file") {
		t.Fatalf("settings: %+v %+v", facts.Firecracker, facts.QEMU)
	}
	// Without Versions no binary is run.
	o = Options{Host: h}
	write("firecracker", `exit 7`)
	if facts = Probe(context.Background(), o); facts.Firecracker.VersionErr != nil || facts.Firecracker.Version != "" {
		t.Fatalf("versions asked for without Versions: %+v", facts.Firecracker)
	}
}

// TestProbeSnapshotsHook: bangerd's way of making snapshots (the helper,
// for a user) decides Facts.Snapshots, not device-mapper here.
func TestProbeSnapshotsHook(t *testing.T) {
	f := newFakeRoot(t)
	helper := errors.New("the helper is not usable on /run/banger/helper.sock")
	facts := Probe(context.Background(), Options{Host: f.host(), Snapshots: func(context.Context) error { return helper }})
	if facts.Snapshots.Usable || facts.Snapshots.Err != helper || facts.DM.Err == nil {
		t.Fatalf("with a failing hook: %+v (here: %v)", facts.Snapshots, facts.DM.Err)
	}
	facts = Probe(context.Background(), Options{Host: f.host(), Snapshots: func(context.Context) error { return nil }})
	if !facts.Snapshots.Usable {
		t.Fatalf("with a working hook: %+v", facts.Snapshots)
	}
	if kind, _, _ := ChooseCOW("auto", facts); kind != COWDMSnap {
		t.Fatalf("auto with snapshots through the hook picks %q", kind)
	}
	facts = Probe(context.Background(), Options{Host: f.host()})
	if facts.Snapshots.Usable || facts.Snapshots.Err != facts.DM.Err {
		t.Fatalf("without a hook: %+v, here %v", facts.Snapshots, facts.DM.Err)
	}
}

func TestProbeVMM(t *testing.T) {
	f := newFakeRoot(t)
	f.add("dev/kvm", "x")
	f.add("sys/module/kvm_pvm", "")
	facts := ProbeVMM(f.host(), "", "")
	if facts.KVM.State != KVMPVM || facts.Firecracker.Found() || facts.QEMU.Found() {
		t.Fatalf("ProbeVMM = %+v", facts)
	}
	if kind, reason, err := ChooseVMM("auto", facts); kind != VMMQEMU || err != nil || !strings.Contains(reason, "kvm_pvm") {
		t.Fatalf("ChooseVMM on a PVM host: %q, %q, %v", kind, reason, err)
	}
}

func FuzzParseFirecrackerVersion(f *testing.F) {
	for _, s := range []string{"Firecracker v1.14.2", "Firecracker v1.14.2-dev", "Firecracker v99999999999.1.1", "firecracker", "", "Firecracker v1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		v, nums, err := ParseFirecrackerVersion(line)
		if err != nil {
			if v != "" {
				t.Fatalf("error with version %q", v)
			}
			return
		}
		if !strings.HasPrefix(v, "v") || !strings.HasPrefix(line, "Firecracker "+v) {
			t.Fatalf("version %q is not from line %q", v, line)
		}
		for _, n := range nums {
			if n < 0 {
				t.Fatalf("negative number in %v", nums)
			}
		}
	})
}
