package initrd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// AgentUnitLink is how banger's image build enables the serving unit: an
// image with it runs the agent from systemd.
const AgentUnitLink = "/etc/systemd/system/sysinit.target.wants/banger-agent.service"

// agentPath is the environment's PATH for the early agent: systemd's
// default, which the agent's unit would have had (the boot duties run
// resize2fs and ssh-keygen from it).
const agentPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// earlyAgentWanted says, after the switch to the new root, whether the
// initramfs starts the image's agent itself before its init: when the
// agent is this build (lent: it knows EarlyAgentFile and its units
// stand aside for it), the image runs it from systemd units, and the init
// is systemd, which would start those units only once it has loaded them
// all (one to two and a half seconds under emulation). An image whose init
// is the agent itself, or anything else, is left as it is, and so is a root
// mounted read-only (the units' agent waits for the remount; the early one
// would not). root is "/" after the switch; tests give a tree of their own.
func earlyAgentWanted(root, init string, lent bool) bool {
	if !lent {
		return false
	}
	if _, err := os.Lstat(filepath.Join(root, AgentUnitLink)); err != nil {
		return false
	}
	target, err := filepath.EvalSymlinks(filepath.Join(root, init))
	if err != nil || filepath.Base(target) != "systemd" {
		return false
	}
	fi, err := os.Lstat(filepath.Join(root, "run"))
	return err == nil && fi.IsDir()
}

// startEarlyAgent mounts /run (a tmpfs, as systemd would; it keeps one
// that is there) and /dev/pts (for the agent's terminals), starts
// "RootAgent run" in a session of its own with the console as its output,
// and records its pid in EarlyAgentFile. Systemd, started next as PID
// 1, inherits it. On any failure nothing is left running and the image's
// units serve as they always did.
func (b *booter) startEarlyAgent() {
	if err := mountIfNot("/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=20%,nr_inodes=800k"); err != nil {
		b.warnf("early agent: mount /run: %v; leaving the agent to its units", err)
		return
	}
	if err := os.MkdirAll("/dev/pts", 0o755); err == nil {
		if err := mountIfNot("/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=000"); err != nil {
			b.warnf("early agent: mount /dev/pts: %v; its terminals wait for systemd's", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(EarlyAgentFile), 0o755); err != nil {
		b.warnf("early agent: %v; leaving the agent to its units", err)
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		// syscall.Setrlimit, not unix's: it also tells the Go runtime
		// that the children get this limit, not the one it started with.
		want := serviceNofile(lim)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			b.warnf("early agent: open-files limit: %v", err)
		}
	}
	cmd := exec.Command(RootAgent, "run")
	cmd.Env = []string{agentPath, "HOME=/root"}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = b.console, b.console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		b.warnf("early agent: start %s: %v; leaving the agent to its units", RootAgent, err)
		return
	}
	pid := cmd.Process.Pid
	tmp := EarlyAgentFile + ".tmp"
	rec, err := EarlyAgentRecord("/proc", pid)
	if err == nil {
		err = os.WriteFile(tmp, []byte(rec), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, EarlyAgentFile)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		_ = os.Remove(tmp)
		b.warnf("early agent: record its pid: %v; leaving the agent to its units", err)
		return
	}
	// Not waited for: the init this process becomes reaps it.
	_ = cmd.Process.Release()
	b.logf("started %s before %s (pid %d)", RootAgent, b.cfg.Init, pid)
}

// mountIfNot mounts fstype on dir unless dir is a mount point already.
func mountIfNot(dir, fstype string, flags uintptr, data string) error {
	if mounted, err := isMountPoint(dir); err != nil || mounted {
		return err
	}
	return unix.Mount(fstype, dir, fstype, flags, data)
}

// isMountPoint says whether dir is on another device than its parent.
func isMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return false, err
	}
	if st.Dev != parent.Dev {
		return true, nil
	}
	return false, nil
}

// EarlyAgentRecord is what EarlyAgentFile holds for the process pid: its
// pid and its start time (field 22 of procDir/<pid>/stat, in clock ticks
// since the machine booted), so that a later process given the same pid
// is not taken for it.
func EarlyAgentRecord(procDir string, pid int) (string, error) {
	_, start, err := ProcState(procDir, pid)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %d\n", pid, start), nil
}

// ProcState reads the state letter (field 3) and the start time (field
// 22) of procDir/<pid>/stat. The program's name, field 2, is in
// parentheses and may hold spaces and parentheses itself: the fields are
// counted after its last ')'.
func ProcState(procDir string, pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s/%d/stat: no program name", procDir, pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("%s/%d/stat: too few fields", procDir, pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s/%d/stat: start time: %w", procDir, pid, err)
	}
	return f[0][0], start, nil
}

// serviceNofile is the open-files limit for the early agent, from the
// current one: what systemd gives the agent's unit (its services' default,
// 1024 soft, 524288 hard) rather than the kernel's for init (hard 4096),
// which the commands `vm exec` starts would otherwise keep. A larger hard
// limit is kept. Systemd, started next, inherits it and raises its own.
func serviceNofile(cur syscall.Rlimit) syscall.Rlimit {
	const soft, hard = 1024, 524288
	lim := syscall.Rlimit{Cur: soft, Max: hard}
	if cur.Max > lim.Max {
		lim.Max = cur.Max
	}
	if cur.Cur < lim.Cur {
		lim.Cur = cur.Cur
	}
	return lim
}
