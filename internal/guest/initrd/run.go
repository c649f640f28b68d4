package initrd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Run is the whole life of /init: mount /proc, /sys and /dev, load the
// modules listed in the manifest, wait for the root device, mount it, move
// the pseudo filesystems into it, lend this binary to the root when its
// agent is the same build (shareAgent), switch to it and exec its init. It only
// returns, with an error, when it is not PID 1 (and then changes nothing).
// On a fatal error it reports on the console and starts a shell if the
// initramfs has one, or else waits forever: PID 1 must not exit.
func Run() error {
	if os.Getpid() != 1 {
		return errors.New("banger initrd: not running as PID 1; this program is the /init of banger's initramfs and changes the whole system, so it refuses to run here")
	}
	b := &booter{console: os.Stderr}
	err := b.boot()
	b.emergency(err)
	return nil // not reached
}

type booter struct {
	console io.Writer
	cfg     Config
}

func (b *booter) logf(format string, args ...any) {
	if b.cfg.Quiet {
		return
	}
	fmt.Fprintf(b.console, "banger-initrd: "+format+"\n", args...)
}

func (b *booter) warnf(format string, args ...any) {
	fmt.Fprintf(b.console, "banger-initrd: warning: "+format+"\n", args...)
}

func (b *booter) boot() error {
	if err := mountPseudo(); err != nil {
		return err
	}
	b.setupConsole()
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading the kernel command line: %w", err)
	}
	b.cfg = ParseCmdline(string(cmdline))
	b.loadModules()
	if err := b.waitForRoot(); err != nil {
		return err
	}
	if err := b.mountRoot(); err != nil {
		return err
	}
	b.moveMounts()
	lent := b.shareAgent("/init", NewRoot)
	if err := b.switchRoot(); err != nil {
		return err
	}
	st, err := os.Stat(b.cfg.Init)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("init %s is missing or not an executable file on the root filesystem %s (set init= on the kernel command line to another program)", b.cfg.Init, b.cfg.Root)
	}
	if !b.cfg.Test && !b.cfg.ReadOnly && earlyAgentWanted("/", b.cfg.Init, lent) {
		b.startEarlyAgent()
	}
	if b.cfg.Test {
		fmt.Fprintln(b.console, TestMarker)
		unix.Sync()
		err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		if err == nil {
			err = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		}
		return fmt.Errorf("powering off after the test marker: %w", err)
	}
	argv := append([]string{b.cfg.Init}, os.Args[1:]...)
	b.logf("starting %s", b.cfg.Init)
	err = unix.Exec(b.cfg.Init, argv, os.Environ())
	return fmt.Errorf("executing init %s: %w", b.cfg.Init, err)
}

// mountPseudo mounts /proc, /sys and /dev (devtmpfs, so device nodes
// appear without udev). Already mounted is fine.
func mountPseudo() error {
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w (does the kernel have %s support?)", m.fstype, m.dst, err, m.fstype)
		}
	}
	return nil
}

// setupConsole makes sure stdin, stdout and stderr are the console, which
// init inherits; the kernel sets them up only when the initramfs has a
// /dev/console node.
func (b *booter) setupConsole() {
	var st unix.Stat_t
	if unix.Fstat(1, &st) == nil && unix.Fstat(2, &st) == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		if fd != i {
			_ = unix.Dup3(fd, i, 0)
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	b.console = os.Stderr
}

// loadModules loads the manifest's modules in order. A module that fails
// to load is reported and skipped: if it mattered, waiting for the root
// device fails with a clearer message.
func (b *booter) loadModules() {
	data, err := os.ReadFile(ManifestPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			b.warnf("reading the module list %s: %v", ManifestPath, err)
		}
		return
	}
	loaded := 0
	for _, p := range ParseManifest(string(data)) {
		name := strings.TrimSuffix(filepath.Base(p), ".ko")
		if err := loadModule(p, b.cfg.Params(name)); err != nil {
			b.warnf("loading module %s: %v", p, err)
			continue
		}
		loaded++
	}
	b.logf("loaded %d modules", loaded)
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if errors.Is(err, unix.ENOSYS) {
		data, rerr := io.ReadAll(f)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(data, params)
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (b *booter) waitForRoot() error {
	root := b.cfg.Root
	if !strings.HasPrefix(root, "/dev/") {
		return fmt.Errorf("root=%s is not supported: banger's initramfs has no udev, so give the device path (for example root=/dev/vda)", root)
	}
	deadline := time.Now().Add(b.cfg.RootWait)
	for {
		if _, err := os.Stat(root); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear within %v; block devices present: %s. Check that the VM has a virtio-blk disk and that virtio_mmio and virtio_blk loaded (see the warnings above)",
				root, b.cfg.RootWait, blockDevices())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func blockDevices() string {
	entries, err := os.ReadDir("/sys/class/block")
	if err != nil || len(entries) == 0 {
		return "none"
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (b *booter) mountRoot() error {
	if err := os.MkdirAll(NewRoot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", NewRoot, err)
	}
	var flags uintptr
	if b.cfg.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	var errs []string
	for _, t := range b.cfg.FSTypes {
		err := unix.Mount(b.cfg.Root, NewRoot, t, flags, b.cfg.RootFlags)
		if err == nil {
			mode := "read-write"
			if b.cfg.ReadOnly {
				mode = "read-only"
			}
			b.logf("mounted %s (%s) %s on %s", b.cfg.Root, t, mode, NewRoot)
			return nil
		}
		errs = append(errs, fmt.Sprintf("as %s: %v", t, err))
	}
	return fmt.Errorf("mounting root device %s failed (%s); check rootfstype= and that the filesystem's module is in the initramfs", b.cfg.Root, strings.Join(errs, "; "))
}

// moveMounts moves /dev, /proc and /sys under the new root. One that cannot
// move is detached instead; the real init mounts it again.
func (b *booter) moveMounts() {
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		target := filepath.Join(NewRoot, m)
		if _, err := os.Stat(target); err != nil {
			if err := os.Mkdir(target, 0o755); err != nil {
				b.warnf("%s has no %s and it cannot be made (%v); leaving it to init", b.cfg.Root, m, err)
				_ = unix.Unmount(m, unix.MNT_DETACH)
				continue
			}
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			b.warnf("moving %s to the new root: %v", m, err)
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

// switchRoot frees the initramfs's memory by deleting its files (never
// crossing into another filesystem), then makes the new root "/".
func (b *booter) switchRoot() error {
	if err := os.Chdir(NewRoot); err != nil {
		return fmt.Errorf("entering %s: %w", NewRoot, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err == nil && (sfs.Type == unix.RAMFS_MAGIC || sfs.Type == unix.TMPFS_MAGIC) {
		var st unix.Stat_t
		if unix.Lstat("/", &st) == nil {
			deleteTree("/", st.Dev)
		}
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the root filesystem to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the root filesystem: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir / in the root filesystem: %w", err)
	}
	return nil
}

// deleteTree removes what is inside dir on the device dev, leaving other
// filesystems (mount points) and dir itself alone. Errors are ignored: this
// only frees memory.
func deleteTree(dir string, dev uint64) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			deleteTree(p, dev)
			_ = unix.Rmdir(p)
			continue
		}
		_ = unix.Unlink(p)
	}
}

// emergency reports a fatal error and keeps PID 1 alive: a shell on the
// console if the system has one, else an endless wait.
func (b *booter) emergency(err error) {
	fmt.Fprintf(b.console, "\nbanger-initrd: FATAL: %v\n", err)
	for _, sh := range []string{"/bin/sh", "/bin/busybox"} {
		if _, serr := os.Stat(sh); serr != nil {
			continue
		}
		fmt.Fprintf(b.console, "banger-initrd: starting %s; the machine stays up when it exits\n", sh)
		cmd := exec.Command(sh)
		if filepath.Base(sh) == "busybox" {
			cmd.Args = []string{"sh"}
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		_ = cmd.Run()
		break
	}
	fmt.Fprintln(b.console, "banger-initrd: halted; power the VM off from the host")
	for {
		// Reap any orphans re-parented to PID 1, and otherwise sleep.
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-1, &ws, 0, nil); err != nil {
			time.Sleep(time.Hour)
		}
	}
}
