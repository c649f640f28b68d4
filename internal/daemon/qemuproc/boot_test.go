package qemuproc

import (
	"banger/internal/hostprobe"
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/kernelprep"
	"banger/internal/testutil/debkernel"
	"banger/internal/testutil/guestbuild"
)

// The boot test runs Debian's real kernel under QEMU with TCG. The kernel
// package is fetched with apt-get download (following the host's apt
// configuration) and cached in $BANGER_TEST_CACHE (default
// ~/.cache/banger-test), so only the first run downloads.

// bootArtefacts prepares the kernel and initramfs, and a root disk whose
// /sbin/init is testdata/guestinit.
func bootArtefacts(t *testing.T) (kernelprep.Artefacts, string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt package e2fsprogs); cannot make a root disk")
	}
	deb, skip := debkernel.Deb()
	if skip != "" {
		t.Skip(skip)
	}
	dir := t.TempDir()
	// The initramfs /init: loads the modules and switches to /dev/vda.
	initBin := filepath.Join(dir, "init")
	guestbuild.GoBuildStatic(t, "../../guest/initrd/testdata/initmain", initBin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	art, err := kernelprep.Prepare(ctx, deb, filepath.Join(dir, "kernel"), kernelprep.Options{Init: initBin})
	if err != nil {
		t.Fatalf("prepare the kernel from %s: %v", deb, err)
	}
	tree := filepath.Join(dir, "root")
	for _, d := range []string{"sbin", "dev", "proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guestbuild.GoBuildStatic(t, "./testdata/guestinit", filepath.Join(tree, "sbin", "init"))
	disk := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, disk, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return art, disk
}

func TestBootDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boot")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot a VM")
	}
	art, rootDisk := bootArtefacts(t)
	t.Run("tcg", func(t *testing.T) {
		// As root, QEMU runs as a user of its own that can open none of
		// the VM's files: it works only through what it was handed. The
		// initrd is made unreadable to that user so that it gets the
		// in-memory copy.
		var cred *syscall.Credential
		if os.Geteuid() == 0 {
			cred = &syscall.Credential{Uid: testUID, Gid: testUID}
			if err := os.Chmod(art.Initrd, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		bootAndStop(t, art, rootDisk, AccelTCG, cred)
	})
	t.Run("kvm", func(t *testing.T) {
		// Opt-in: a nested /dev/kvm can answer every probe yet make QEMU
		// abort with -cpu host or boot slower than TCG.
		if os.Getenv("BANGER_TEST_QEMU_KVM") != "1" {
			t.Skip("set BANGER_TEST_QEMU_KVM=1 to boot under KVM as well")
		}
		if kvm := hostprobe.ProbeKVM(hostprobe.System()); !kvm.Usable() {
			t.Skip(kvm.Reason)
		}
		bootAndStop(t, art, rootDisk, AccelKVM, nil)
	})
}

// bootAndStop boots the guest with a root disk, a read-only data disk, user
// networking with a forward and the agent port, checks what the guest
// saw, and stops it through the graceful hook.
func bootAndStop(t *testing.T, art kernelprep.Artefacts, rootDisk string, accel Accel, cred *syscall.Credential) {
	data := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(data, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{
		Dir:        filepath.Join(t.TempDir(), "vm"),
		Kernel:     art.Vmlinux,
		Initrd:     art.Initrd,
		Cmdline:    "root=/dev/vda rw panic=-1",
		MemoryMiB:  256,
		Drives:     []Drive{{Path: rootDisk}, {Path: data, ReadOnly: true}},
		Net:        Net{User: &User{Forwards: []Forward{{GuestPort: 22}}}},
		Accel:      accel,
		Timeouts:   Timeouts{Graceful: 60 * time.Second, Powerdown: 5 * time.Second, Quit: 10 * time.Second},
		Credential: cred,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkConfined(t, p.PID, cred)
	defer func() {
		if !p.Exited() {
			p.Stop(context.Background(), nil)
		}
	}()
	if p.Accel != accel {
		t.Errorf("accel %q (%s), want %s", p.Accel, p.AccelReason, accel)
	}
	console := func() string {
		b, _ := os.ReadFile(p.ConsoleLog)
		return string(b)
	}

	// The forward's host port is reported and QEMU listens on it.
	if len(p.Forwards) != 1 || p.Forwards[0].HostPort == 0 {
		t.Fatalf("forwards %+v: want one with a host port", p.Forwards)
	}
	hostPort := net.JoinHostPort(p.Forwards[0].HostAddr, strconv.Itoa(p.Forwards[0].HostPort))
	if c, err := net.DialTimeout("tcp", hostPort, 10*time.Second); err != nil {
		t.Errorf("forwarded host port %s: %v", hostPort, err)
	} else {
		c.Close()
	}

	// The guest's init greets us on the banger.agent port.
	var d net.Dialer
	agent, err := d.DialContext(ctx, "unix", p.AgentSocket)
	if err != nil {
		t.Fatalf("connect to the agent socket: %v", err)
	}
	defer agent.Close()
	agent.SetDeadline(time.Now().Add(60 * time.Second))
	line, err := bufio.NewReader(agent).ReadString('\n')
	if err != nil || line != "hello from the guest\n" {
		t.Fatalf("agent port said %q, %v; console:\n%s", line, err, tail(console(), 40))
	}
	agent.SetDeadline(time.Time{})

	log := console()
	if strings.Contains(log, "tsc_early_khz=") != (accel == AccelTCG) {
		t.Errorf("tsc_early_khz on the %s command line: %v", accel, !(accel == AccelTCG))
	}
	for _, want := range []string{
		"Linux version 6.1",
		"GUESTINIT: root /dev/vda ext4", // the first drive is the root disk
		"GUESTINIT: disk vdb ro=1",      // the second is read-only
	} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, tail(log, 40))
		}
	}

	// Graceful stop: the guest powers itself off and QEMU exits.
	err = p.Stop(ctx, func(ctx context.Context) error {
		_, err := agent.Write([]byte("poweroff\n"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.StoppedBy() != StopGraceful {
		t.Errorf("stopped by %q, want graceful; console:\n%s", p.StoppedBy(), tail(console(), 20))
	}
	assertGone(t, p)
	if c, err := net.DialTimeout("tcp", hostPort, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("host port %s still open after Stop", hostPort)
	}
}

// testUID is a uid with no user entry, inside the range banger gives VMMs.
const testUID = 0x7A00FFF0

// checkConfined checks that QEMU runs under its seccomp filter and, with a
// credential, as that user with no capabilities.
func checkConfined(t *testing.T, pid int, cred *syscall.Credential) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	if status["Seccomp"] != "2" {
		t.Errorf("QEMU's Seccomp is %q, want 2 (filtered)", status["Seccomp"])
	}
	uid := os.Geteuid()
	if cred != nil {
		uid = int(cred.Uid)
		if status["CapEff"] != "0000000000000000" {
			t.Errorf("QEMU has capabilities %s", status["CapEff"])
		}
	}
	if f := strings.Fields(status["Uid"]); len(f) != 4 || f[0] != strconv.Itoa(uid) || f[1] != strconv.Itoa(uid) {
		t.Errorf("QEMU runs as uids %q, want %d", status["Uid"], uid)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
