package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host is where the probes look. Tests point it at a fake tree and a PATH
// of fake programs.
type Host struct {
	// Root prefixes every absolute host path the probes read (/dev, /sys,
	// /proc); "" or "/" means the real host.
	Root string
	// Path is the PATH searched for programs.
	Path string
	// UID is the effective user id banger runs as.
	UID int
}

// System is the real host: the root filesystem, $PATH and this process's
// effective user id.
func System() Host {
	return Host{Root: "/", Path: os.Getenv("PATH"), UID: os.Geteuid()}
}

// Real reports whether h is the real host rather than a fake tree: only
// there do the probes make ioctls on device files.
func (h Host) Real() bool { return h.Root == "" || h.Root == "/" }

// PathOf maps an absolute host path into h.Root.
func (h Host) PathOf(p string) string {
	if h.Real() {
		return p
	}
	return filepath.Join(h.Root, p)
}

// Exists reports whether the host path p exists.
func (h Host) Exists(p string) bool {
	_, err := os.Stat(h.PathOf(p))
	return err == nil
}

// LookPath finds an executable regular file called name in h.Path.
func (h Host) LookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(h.Path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if IsExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH", name)
}

// SbinDirs hold administrator tools that an unprivileged user's PATH often
// lacks; root (and so the daemon when it runs as root) has them.
var SbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// LookAdmin finds an administrator tool on PATH, then in SbinDirs (inside
// h.Root).
func (h Host) LookAdmin(name string) (string, error) {
	if p, err := h.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range SbinDirs {
		p := h.PathOf(filepath.Join(dir, name))
		if IsExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH or in %s", name, strings.Join(SbinDirs, ", "))
}

// IsExecutable reports whether p is a regular file this process may
// execute (an execute bit for another user is not enough).
func IsExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 &&
		unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS) == nil
}

// hasModule reports whether the kernel module name is loaded or built in
// with parameters (/sys/module/NAME), or listed in /proc/modules.
func (h Host) hasModule(name string) bool {
	if h.Exists("/sys/module/" + name) {
		return true
	}
	data, err := os.ReadFile(h.PathOf("/proc/modules"))
	return err == nil && HasWord(string(data), name)
}

// HasWord reports whether a line of text starts with the field word.
func HasWord(text, word string) bool {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == word {
			return true
		}
	}
	return false
}

// CommandTimeout bounds every program the probes run (`--version`); a
// variable so that tests can shorten it.
var CommandTimeout = 5 * time.Second

// RunOutput runs bin with args, bounded by CommandTimeout, and returns its
// standard output. The program runs in a process group of its own, killed
// whole at the timeout: a script that left a child holding its output open
// (a wrapper that hangs on --version) would otherwise keep the wait, and
// so doctor, blocked for ever.
func RunOutput(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return "", fmt.Errorf("`%s %s` did not finish within %s", bin, strings.Join(args, " "), CommandTimeout)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(bytes.TrimSpace(ee.Stderr)) > 0 {
			return "", fmt.Errorf("`%s %s` failed: %v: %s", bin, strings.Join(args, " "), err, FirstOf(string(ee.Stderr)))
		}
		return "", fmt.Errorf("`%s %s` failed: %v", bin, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// FirstLine runs bin with args (bounded by CommandTimeout) and returns the
// first non-empty line of its output.
func FirstLine(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := RunOutput(ctx, bin, args...)
	if err != nil {
		return "", err
	}
	return FirstOf(out), nil
}

// FirstOf is the first non-empty line of s, trimmed.
func FirstOf(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// errnoOf is the bare errno of a path error, for messages that name the
// path themselves.
func errnoOf(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
