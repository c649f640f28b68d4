package dmsnap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/kernelprep"
	"banger/internal/testutil/debkernel"
	"banger/internal/testutil/guestbuild"
)

// TestSnapshotInGuest runs testdata/guesttest as /sbin/init of a Debian
// 6.1 guest under QEMU (software emulation): this host has no
// device-mapper, that kernel does. The guest program drives the real
// Create, List and Remove and reports PASS or FAIL on the serial console.
func TestSnapshotInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU guest")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot a guest with device-mapper")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt package e2fsprogs); cannot make a root disk")
	}
	deb, skip := debkernel.Deb()
	if skip != "" {
		t.Skip(skip)
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	guestbuild.GoBuildStatic(t, "banger/internal/guest/initrd/testdata/initmain", initBin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mods := append(slices.Clone(kernelprep.DefaultOptionalModules), "dm_mod", "dm_snapshot", "loop")
	art, err := kernelprep.Prepare(ctx, deb, filepath.Join(dir, "kernel"), kernelprep.Options{Init: initBin, OptionalModules: mods})
	if err != nil {
		t.Fatalf("prepare the kernel from %s: %v", deb, err)
	}
	for _, m := range []string{"dm_mod", "dm_snapshot"} {
		if !slices.Contains(art.Modules, m) {
			t.Fatalf("the initramfs lacks %s (modules: %v); the kernel package has no device-mapper snapshot module", m, art.Modules)
		}
	}

	tree := filepath.Join(dir, "root")
	for _, d := range []string{"sbin", "dev", "proc", "sys", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guestbuild.GoBuildStatic(t, "./testdata/guesttest", filepath.Join(tree, "sbin", "init"))
	disk := filepath.Join(dir, "root.ext4")
	// Room for a 16 MiB origin and the COW files' writes.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, disk, "160M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}

	logPath := filepath.Join(dir, "console.log")
	appendLine := "console=ttyS0 root=/dev/vda rw panic=-1"
	if khz := guestbuild.HostTSCkHz(); khz > 0 {
		appendLine += fmt.Sprintf(" tsc_early_khz=%d", khz)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer qcancel()
	cmd := exec.CommandContext(qctx, qemu, "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "file:"+logPath,
		"-kernel", art.Vmlinux, "-initrd", art.Initrd, "-append", appendLine,
		"-drive", "id=root,file="+disk+",format=raw,if=none", "-device", "virtio-blk-device,drive=root",
		"-no-reboot")
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(logPath)
	if qctx.Err() != nil {
		t.Fatalf("the guest did not power off within 150 s; console:\n%s", tail(string(log), 60))
	}
	if err != nil {
		t.Fatalf("qemu: %v\n%s\nconsole:\n%s", err, out, tail(string(log), 60))
	}
	var result string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "DMSNAP-TEST:") {
			t.Log(strings.TrimSpace(l))
			result = strings.TrimSpace(l)
		}
	}
	if result != "DMSNAP-TEST: PASS" {
		t.Fatalf("the guest test did not pass (last: %q); console:\n%s", result, tail(string(log), 60))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
