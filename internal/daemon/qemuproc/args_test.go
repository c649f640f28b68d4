package qemuproc

import (
	"banger/internal/hostprobe"
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestArgs(t *testing.T) {
	common := func(accel, cpu string) []string {
		return []string{"-M", "microvm,acpi=on", "-accel", accel, "-cpu", cpu, "-smp", "2", "-m", "256M",
			"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
			"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
			"-name", "guest=/run/vm/", "-kernel", "/proc/self/fd/6"}
	}
	tail := []string{"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,fd=4,server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=banger.agent"}
	monitor := []string{"-add-fd", "fd=5,set=1,opaque=/run/vm/console.log",
		"-chardev", "file,id=console,path=/dev/fdset/1,append=on", "-serial", "chardev:console",
		"-chardev", "socket,id=qmp,fd=3,server=on,wait=off", "-mon", "chardev=qmp,mode=control"}
	base := Config{Dir: "/run/vm", Kernel: "/k/vmlinux", Cmdline: "root=/dev/vda rw", VCPUs: 2, MemoryMiB: 256}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name string
		plan plan
		want []string
	}{
		{
			name: "tcg, no net, no drives",
			plan: plan{cfg: base, accel: AccelTCG, tscKHz: 2596126},
			want: cat(common("tcg", "max"),
				[]string{"-append", "root=/dev/vda rw console=ttyS0 tsc_early_khz=2596126"}, monitor, tail),
		},
		{
			name: "kvm with initrd, drives and tap",
			plan: func() plan {
				c := base
				c.Initrd = "/k/initrd.img"
				c.Drives = []Drive{{Path: "/img/root.ext4"}, {Path: "/img/a,b.img", ReadOnly: true}, {Path: "/dev/mapper/snap"}}
				c.Net = Net{Tap: &Tap{Name: "tap-vm1", MAC: "02:FC:00:00:00:01"}}
				return plan{cfg: c, accel: AccelKVM, tscKHz: 0, blockDevs: []bool{false, false, true}}
			}(),
			want: cat(common("kvm", "host"),
				[]string{"-initrd", "/proc/self/fd/7", "-append", "root=/dev/vda rw console=ttyS0"}, monitor,
				[]string{"-add-fd", "fd=8,set=10,opaque=/img/root.ext4", "-add-fd", "fd=9,set=10,opaque=/img/root.ext4",
					"-drive", "id=vd0,file=/dev/fdset/10,format=raw,if=none,file.locking=off", "-device", "virtio-blk-device,drive=vd0",
					"-add-fd", "fd=10,set=11,opaque=/img/a,,b.img", "-add-fd", "fd=11,set=11,opaque=/img/a,,b.img",
					"-drive", "id=vd1,file=/dev/fdset/11,format=raw,if=none,readonly=on,file.locking=off", "-device", "virtio-blk-device,drive=vd1",
					"-add-fd", "fd=12,set=12,opaque=/dev/mapper/snap", "-add-fd", "fd=13,set=12,opaque=/dev/mapper/snap",
					"-drive", "id=vd2,format=raw,if=none,file.driver=host_device,file.filename=/dev/fdset/12,file.locking=off", "-device", "virtio-blk-device,drive=vd2",
					"-netdev", "tap,id=n0,fd=14", "-device", "virtio-net-device,netdev=n0,mac=02:fc:00:00:00:01"},
				tail),
		},
		{
			name: "tcg with user net and forwards",
			plan: func() plan {
				c := base
				c.Cmdline = "quiet console=ttyS0,115200 tsc_early_khz=1000"
				c.Drives = []Drive{{Path: "/img/root.ext4", ReadOnly: true}}
				c.Net = Net{User: &User{}}
				return plan{cfg: c, accel: AccelTCG, tscKHz: 2596126, fwds: []Forward{
					{HostAddr: "127.0.0.1", HostPort: 2222, GuestPort: 22},
					{HostAddr: "0.0.0.0", HostPort: 8080, GuestPort: 80},
				}}
			}(),
			want: cat(common("tcg", "max"),
				[]string{"-append", "quiet console=ttyS0,115200 tsc_early_khz=1000"}, monitor,
				[]string{"-add-fd", "fd=7,set=10,opaque=/img/root.ext4", "-add-fd", "fd=8,set=10,opaque=/img/root.ext4",
					"-drive", "id=vd0,file=/dev/fdset/10,format=raw,if=none,readonly=on,file.locking=off", "-device", "virtio-blk-device,drive=vd0",
					"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:0.0.0.0:8080-:80", "-device", "virtio-net-device,netdev=n0"},
				tail),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.plan.args()
			if !slices.Equal(got, tt.want) {
				t.Errorf("argv differs\n got: %q\nwant: %q", got, tt.want)
			}
			// Adopt reads the accelerator and forwards back from the argv.
			accel, fwds := describeArgs(got)
			if accel != tt.plan.accel || !slices.Equal(fwds, tt.plan.fwds) {
				t.Errorf("describeArgs = %q %v, want %q %v", accel, fwds, tt.plan.accel, tt.plan.fwds)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{Dir: filepath.Join(dir, "vm"), Kernel: kernel}
	c := ok
	if err := c.check(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if c.VCPUs != 1 || c.MemoryMiB != 512 || c.Accel != AccelAuto || c.Timeouts.Kill == 0 || c.StartTimeout == 0 {
		t.Errorf("defaults not filled in: %+v", c)
	}
	bad := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"relative dir", func(c *Config) { c.Dir = "vm" }, "not an absolute path"},
		{"comma dir", func(c *Config) { c.Dir = "/tmp/a,b" }, "comma"},
		{"long dir", func(c *Config) { c.Dir = "/" + strings.Repeat("d", 100) }, "too long"},
		{"no kernel", func(c *Config) { c.Kernel = "" }, "no kernel"},
		{"missing kernel", func(c *Config) { c.Kernel = filepath.Join(dir, "nope") }, "kernel:"},
		{"kernel is a dir", func(c *Config) { c.Kernel = dir }, "not a regular file"},
		{"missing initrd", func(c *Config) { c.Initrd = filepath.Join(dir, "nope") }, "initrd:"},
		{"missing drive", func(c *Config) { c.Drives = []Drive{{Path: filepath.Join(dir, "nope")}} }, "drive 0"},
		{"bad accel", func(c *Config) { c.Accel = "hvf" }, "not one of auto, kvm, tcg"},
		{"too little memory", func(c *Config) { c.MemoryMiB = 8 }, "too small"},
		{"two nets", func(c *Config) { c.Net = Net{Tap: &Tap{Name: "t0"}, User: &User{}} }, "choose one"},
		{"bad tap name", func(c *Config) { c.Net = Net{Tap: &Tap{Name: "tap,x"}} }, "not a valid interface name"},
		{"long tap name", func(c *Config) { c.Net = Net{Tap: &Tap{Name: strings.Repeat("t", 16)}} }, "not a valid interface name"},
		{"bad mac", func(c *Config) { c.Net = Net{Tap: &Tap{Name: "t0", MAC: "02:00:00:00:00"}} }, "MAC address"},
		{"multicast mac", func(c *Config) { c.Net = Net{User: &User{MAC: "01:00:00:00:00:01"}} }, "multicast"},
		{"ipv6 forward", func(c *Config) { c.Net = Net{User: &User{Forwards: []Forward{{HostAddr: "::1", GuestPort: 22}}}} }, "not an IPv4"},
		{"no guest port", func(c *Config) { c.Net = Net{User: &User{Forwards: []Forward{{}}}} }, "guest port 0"},
		{"duplicate host port", func(c *Config) {
			c.Net = Net{User: &User{Forwards: []Forward{{HostPort: 2222, GuestPort: 22}, {HostPort: 2222, GuestPort: 23}}}}
		}, "forwarded twice"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := ok
			b.mod(&c)
			err := c.check()
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("check() = %v, want an error with %q", err, b.want)
			}
		})
	}
}

func TestKernelCmdline(t *testing.T) {
	for _, tt := range []struct {
		in   string
		khz  int
		want string
	}{
		{"", 0, "console=ttyS0"},
		{"  root=/dev/vda   rw ", 1234, "root=/dev/vda rw console=ttyS0 tsc_early_khz=1234"},
		{"console=ttyS0,115200", 5, "console=ttyS0,115200 tsc_early_khz=5"},
		{"console=hvc0 tsc_early_khz=7", 5, "console=hvc0 tsc_early_khz=7 console=ttyS0"},
	} {
		if got := kernelCmdline(tt.in, tt.khz); got != tt.want {
			t.Errorf("kernelCmdline(%q, %d) = %q, want %q", tt.in, tt.khz, got, tt.want)
		}
	}
}

func TestParseCPUInfo(t *testing.T) {
	in := "processor\t: 0\ncpu MHz\t\t: 2596.126\nflags\t\t: fpu tsc constant_tsc\n\nprocessor\t: 1\ncpu MHz\t\t: 800.000\nflags\t\t: fpu\n"
	flags, mhz := parseCPUInfo(bufio.NewScanner(strings.NewReader(in)))
	if mhz != 2596.126 || !flags["constant_tsc"] || !flags["tsc"] || flags["nope"] {
		t.Errorf("parseCPUInfo = %v, %v", flags, mhz)
	}
	if _, mhz := parseCPUInfo(bufio.NewScanner(strings.NewReader("cpu MHz : lots\n"))); mhz != 0 {
		t.Errorf("garbage MHz parsed as %v", mhz)
	}
}

func TestHostTSC(t *testing.T) {
	khz, from := hostTSCkHz()
	if _, mhz := readCPUInfo("/proc/cpuinfo"); mhz == 0 && khz == 0 {
		t.Skip("this host's /proc/cpuinfo has no cpu MHz and the TSC cannot be measured")
	}
	if khz < 100_000 || khz > 20_000_000 {
		t.Fatalf("host TSC %d kHz (from %s) is not believable", khz, from)
	}
	t.Logf("host TSC %d kHz from %s", khz, from)
}

func TestChooseAccel(t *testing.T) {
	for _, kvm := range []hostprobe.KVM{
		{State: hostprobe.KVMAbsent, Reason: "/dev/kvm does not exist"},
		{State: hostprobe.KVMPVM, Reason: "/dev/kvm comes from the kvm_pvm module"},
		{State: hostprobe.KVMBroken, Reason: "/dev/kvm does not answer KVM_GET_API_VERSION"},
	} {
		a, why, err := chooseAccel(AccelAuto, kvm)
		if err != nil || a != AccelTCG || !strings.Contains(why, kvm.Reason) {
			t.Errorf("auto with %s: %q %q %v, want tcg with the reason", kvm.State, a, why, err)
		}
		if _, _, err := chooseAccel(AccelKVM, kvm); err == nil || !strings.Contains(err.Error(), "tcg") {
			t.Errorf("kvm with %s: %v, want an error suggesting tcg", kvm.State, err)
		}
		if a, _, err := chooseAccel(AccelTCG, kvm); a != AccelTCG || err != nil {
			t.Errorf("tcg: %q %v", a, err)
		}
	}
	usable := hostprobe.KVM{State: hostprobe.KVMUsable, Reason: "/dev/kvm opens read-write"}
	if a, _, err := chooseAccel(AccelAuto, usable); a != AccelKVM || err != nil {
		t.Errorf("auto with a usable KVM: %q %v", a, err)
	}
}

// openFiles hands QEMU exactly the descriptors its argv names, in order,
// and a kernel QEMU's user could not read becomes a sealed copy.
func TestOpenFilesMatchArgs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vm := filepath.Join(dir, "vm")
	if err := os.Mkdir(vm, 0o700); err != nil {
		t.Fatal(err)
	}
	pl := &plan{cfg: Config{Dir: vm, Kernel: write("vmlinux", 0o600), Initrd: write("initrd", 0o644),
		Drives: []Drive{{Path: write("root", 0o600)}, {Path: write("seed", 0o600), ReadOnly: true}}}, accel: AccelTCG}
	files, err := pl.openFiles(true)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	highest := 0
	args := pl.args()
	for _, a := range args {
		for _, f := range strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == '/' }) {
			var n int
			if _, err := fmt.Sscanf(f, "fd=%d", &n); err == nil && n > highest {
				highest = n
			}
		}
	}
	if len(files) != highest-2 {
		t.Errorf("%d descriptors opened, argv names up to fd %d: %q", len(files), highest, args)
	}
	mode := func(i int) int {
		fl, err := unix.FcntlInt(files[i].Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fl & unix.O_ACCMODE
	}
	if mode(pl.fdDrive(0)-3) != unix.O_RDONLY || mode(pl.fdDrive(0)-2) != unix.O_RDWR || mode(pl.fdDrive(1)-2) != unix.O_RDONLY {
		t.Error("drive descriptors do not pair a read-only with a read-write one (read-only for a read-only drive)")
	}
	if fl, _ := unix.FcntlInt(files[fdConsole-3].Fd(), unix.F_GETFL, 0); fl&unix.O_APPEND == 0 {
		t.Error("the console log is not opened for appending")
	}
	if !strings.HasPrefix(files[fdKernel-3].Name(), "memfd:") || strings.HasPrefix(files[pl.fdInitrd()-3].Name(), "memfd:") {
		t.Errorf("kernel %s, initrd %s: want a copy of the unreadable kernel only", files[fdKernel-3].Name(), files[pl.fdInitrd()-3].Name())
	}
	if seals, err := unix.FcntlInt(files[fdKernel-3].Fd(), unix.F_GET_SEALS, 0); err != nil || seals&unix.F_SEAL_WRITE == 0 {
		t.Errorf("the kernel copy is not sealed: %#x, %v", seals, err)
	}
	for _, s := range []string{QMPSocketPath(vm), AgentSocketPath(vm)} {
		if fi, err := os.Stat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s is not a socket: %v", s, err)
		}
	}
}
