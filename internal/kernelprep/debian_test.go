package kernelprep

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/guest/initrd"
	"banger/internal/testutil/debkernel"
	"banger/internal/testutil/guestbuild"
)

// These tests use Debian's real kernel package, fetched with apt-get
// download (which follows the host's apt configuration) and cached in
// $BANGER_TEST_CACHE (default ~/.cache/banger-test).

var (
	debianOnce sync.Once
	debianArt  Artefacts
	debianSkip string
	debianErr  error
	sharedDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// buildInit builds the test /init (a static binary calling initrd.Run).
func buildInit(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	out := filepath.Join(dir, "init")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "../guest/initrd/testdata/initmain")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the test init: %v\n%s", err, b)
	}
	return out, nil
}

// debianKernel prepares Debian's kernel once for all tests.
func debianKernel(t *testing.T) Artefacts {
	t.Helper()
	debianOnce.Do(func() {
		deb, skip := debkernel.Deb()
		if skip != "" {
			debianSkip = skip
			return
		}
		sharedDir, debianErr = os.MkdirTemp("", "kernelprep-debian-")
		if debianErr != nil {
			return
		}
		initBin, err := buildInit(sharedDir)
		if err != nil {
			debianErr = err
			return
		}
		debianArt, debianErr = Prepare(context.Background(), deb, filepath.Join(sharedDir, "kernel"), Options{Init: initBin})
	})
	if debianSkip != "" {
		t.Skip(debianSkip)
	}
	if debianErr != nil {
		t.Fatal(debianErr)
	}
	return debianArt
}

func TestPrepareDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the real Debian kernel package")
	}
	a := debianKernel(t)
	f, err := elf.Open(a.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("vmlinux is %v %v %v", f.Class, f.Machine, f.Type)
	}
	before := func(a1, b1 string) {
		i, j := slices.Index(a.Modules, a1), slices.Index(a.Modules, b1)
		if i < 0 || j < 0 || i > j {
			t.Errorf("want %s before %s in %v", a1, b1, a.Modules)
		}
	}
	before("virtio_ring", "virtio_blk")
	before("virtio", "virtio_mmio")
	before("jbd2", "ext4")
	before("mbcache", "ext4")
	before("crc32c_generic", "jbd2") // softdep pre: crypto-crc32c
	before("net_failover", "virtio_net")
	before("vsock", "vmw_vsock_virtio_transport")
	for _, m := range DefaultModules {
		if !slices.Contains(a.Modules, m) {
			t.Errorf("%s missing from %v", m, a.Modules)
		}
	}
	if _, err := os.Stat(filepath.Join(a.ModulesDir, a.Release, "kernel", "fs", "ext4")); err != nil {
		t.Errorf("module tree incomplete: %v", err)
	}
}

// bootQEMU boots the kernel and initrd with a root disk under QEMU microvm
// (software emulation) and returns the console output up to the first line
// containing one of stop, or until QEMU exits or two minutes pass.
func bootQEMU(t *testing.T, a Artefacts, disk, extraArgs string, stop ...string) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot the initramfs")
	}
	appendLine := "console=ttyS0 root=/dev/vda rw panic=-1 reboot=t " + extraArgs
	if khz := guestbuild.HostTSCkHz(); khz > 0 {
		appendLine += fmt.Sprintf(" tsc_early_khz=%d", khz)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
		"-kernel", a.Vmlinux, "-initrd", a.Initrd, "-append", appendLine,
		"-drive", "id=root,file="+disk+",format=raw,if=none", "-device", "virtio-blk-device,drive=root",
		"-no-reboot")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
scan:
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		for _, s := range stop {
			if strings.Contains(sc.Text(), s) {
				break scan
			}
		}
	}
	cancel()
	_ = cmd.Wait()
	return log.String()
}

func rootDisk(t *testing.T, withInit bool) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt package e2fsprogs); cannot make a root disk")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(tree, "sbin"), 0o755)
	if withInit {
		os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	}
	disk := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, disk, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return disk
}

func TestBootDebianKernelQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boot")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot the initramfs")
	}
	a := debianKernel(t)
	log := bootQEMU(t, a, rootDisk(t, true), "banger.initrd_test=1", initrd.TestMarker, "FATAL", "Kernel panic")
	if !strings.Contains(log, initrd.TestMarker) {
		t.Fatalf("no %q on the console:\n%s", initrd.TestMarker, tail(log, 60))
	}
	if !strings.Contains(log, "banger-initrd: loaded ") || strings.Contains(log, "warning: loading module") {
		t.Errorf("modules did not all load:\n%s", tail(log, 60))
	}
}

func TestBootMissingInitReportsQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boot")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot the initramfs")
	}
	a := debianKernel(t)
	// The root disk has no /sbin/init: init must say so and stay up
	// (a PID 1 exit would panic the kernel).
	log := bootQEMU(t, a, rootDisk(t, false), "banger.initrd_test=1", "halted", "Kernel panic", initrd.TestMarker)
	if !strings.Contains(log, "FATAL: init /sbin/init is missing") || !strings.Contains(log, "halted") {
		t.Fatalf("no clear fatal message:\n%s", tail(log, 40))
	}
	if strings.Contains(log, "Kernel panic") || strings.Contains(log, initrd.TestMarker) {
		t.Fatalf("wrong outcome:\n%s", tail(log, 40))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
