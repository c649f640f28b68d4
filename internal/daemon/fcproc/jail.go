package fcproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/procwatch"
)

// Jail describes running Firecracker under its jailer: chrooted into a
// directory of its own, as an unprivileged uid and gid, in a new mount
// namespace, with only the device nodes it needs.
//
// Start uses it when Config.Jail is set. The jailer execs Firecracker in
// place (no --daemonize, no --new-pid-ns), so the pid Start spawned is
// Firecracker's, and Adopt finds it by pid, start time and its chroot.
// No --cgroup is passed: the jailer then creates no cgroup, on v1 or v2
// hosts alike. See docs/security.md.
type Jail struct {
	Binary   string // the jailer executable
	UID, GID uint32
	// BaseDir is --chroot-base-dir: the chroot is
	// BaseDir/<firecracker's file name>/<Config.Name>/root. It must be on
	// the filesystem of the VM's disks, which are hard-linked into it.
	BaseDir string
}

// JailerPath finds the jailer: beside the firecracker binary, else on PATH.
func JailerPath(firecracker string) (string, bool) {
	if firecracker != "" {
		p := filepath.Join(filepath.Dir(firecracker), "jailer")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, true
		}
	}
	p, err := exec.LookPath("jailer")
	return p, err == nil
}

// Paths inside the chroot.
const (
	jailAPISock = "/run/" + APISocketName
	jailVsock   = "/run/" + VsockSocketName
	jailKernel  = "/vmlinux"
	jailInitrd  = "/initrd"
	jailLog     = "/" + LogName
	jailMetrics = "/" + MetricsName
)

// jailFile is one file put into the chroot before Firecracker starts.
type jailFile struct {
	Host, InJail string
	// Owned files (the writable drives) are handed to the jail's uid;
	// the others are linked, or copied when the jail's uid could not read
	// them, and stay read-only.
	Owned bool
}

// jailLayout says where a jailed VM's files are, on the host and inside
// its chroot: the API takes the paths inside, bangerd uses the host ones.
type jailLayout struct {
	Root    string // the chroot, on the host
	APISock string // host path of the API socket
	Vsock   string // host path of the vsock socket
	Kernel  string // inside the chroot
	Initrd  string // inside the chroot; "" when there is none
	Drives  map[string]string
	Log     string // inside the chroot
	Metrics string
	Files   []jailFile
}

// planJail builds the jailer's argv (without the binary) and the layout of
// the chroot for cfg.
func planJail(cfg Config, j Jail) ([]string, jailLayout, error) {
	if j.Binary == "" || j.BaseDir == "" || !filepath.IsAbs(j.BaseDir) {
		return nil, jailLayout{}, fmt.Errorf("jailer: need the jailer binary and an absolute chroot base dir (got %q, %q)", j.Binary, j.BaseDir)
	}
	if j.UID == 0 || j.GID == 0 {
		return nil, jailLayout{}, errors.New("jailer: the jail's uid and gid must not be root's")
	}
	if !nameRe.MatchString(cfg.Name) {
		return nil, jailLayout{}, fmt.Errorf("jailer: VM name %q: ids are 1 to 64 letters, digits or '-'", cfg.Name)
	}
	fc := cfg.Binary
	if fc == "" {
		fc = "firecracker"
	}
	if !strings.Contains(filepath.Base(fc), "firecracker") {
		return nil, jailLayout{}, fmt.Errorf("jailer: it only runs a binary whose file name contains \"firecracker\", not %s", fc)
	}
	root := filepath.Join(j.BaseDir, filepath.Base(fc), cfg.Name, "root")
	l := jailLayout{
		Root:    root,
		APISock: filepath.Join(root, jailAPISock),
		Vsock:   filepath.Join(root, jailVsock),
		Kernel:  jailKernel,
		Drives:  map[string]string{},
		Log:     jailLog,
		Metrics: jailMetrics,
	}
	for _, s := range []string{l.APISock, l.Vsock + "_4294967295"} {
		if len(s) > maxSunPath {
			return nil, jailLayout{}, fmt.Errorf("jailer: socket path %s is longer than %d bytes; use a shorter chroot base dir", s, maxSunPath)
		}
	}
	l.Files = append(l.Files, jailFile{Host: cfg.Kernel, InJail: jailKernel})
	if cfg.Initrd != "" {
		l.Initrd = jailInitrd
		l.Files = append(l.Files, jailFile{Host: cfg.Initrd, InJail: jailInitrd})
	}
	for _, d := range cfg.Drives {
		in := "/drives/" + d.ID
		l.Drives[d.ID] = in
		l.Files = append(l.Files, jailFile{Host: d.Path, InJail: in, Owned: !d.ReadOnly})
	}
	args := []string{
		"--id", cfg.Name,
		"--exec-file", fc,
		"--uid", strconv.FormatUint(uint64(j.UID), 10),
		"--gid", strconv.FormatUint(uint64(j.GID), 10),
		"--chroot-base-dir", j.BaseDir,
		"--",
		"--api-sock", jailAPISock,
	}
	return args, l, nil
}

// prepare makes the chroot and puts the VM's files in it: each a hard link
// (the disks must be on the chroot's filesystem), or, for a kernel or
// initrd the jail's uid could not read or that lives on another
// filesystem, a copy. Writable drives are handed to the jail's uid and gid.
func (l jailLayout) prepare(uid, gid uint32) error {
	for _, d := range []string{l.Root, filepath.Join(l.Root, "run"), filepath.Join(l.Root, "drives")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("jailer: make %s: %w", d, err)
		}
	}
	if err := os.Chown(filepath.Join(l.Root, "run"), int(uid), int(gid)); err != nil {
		return fmt.Errorf("jailer: hand %s to uid %d: %w", filepath.Join(l.Root, "run"), uid, err)
	}
	for _, f := range l.Files {
		dst := filepath.Join(l.Root, f.InJail)
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("jailer: %w", err)
		}
		fi, err := os.Stat(f.Host)
		if err != nil {
			return fmt.Errorf("jailer: %w", err)
		}
		readable := fi.Mode().Perm()&0o004 != 0
		err = os.Link(f.Host, dst)
		switch {
		case err == nil && (f.Owned || readable):
		case f.Owned:
			if errors.Is(err, syscall.EXDEV) {
				return fmt.Errorf("jailer: drive %s is on another filesystem than the chroot %s: put the chroot base dir on the state dir's filesystem", f.Host, l.Root)
			}
			return fmt.Errorf("jailer: link %s into the chroot: %w", f.Host, err)
		default:
			// Unreadable to the jail, or another filesystem: a copy of its own.
			if err == nil {
				os.Remove(dst)
			}
			if err := copyReadOnly(f.Host, dst); err != nil {
				return fmt.Errorf("jailer: copy %s into the chroot: %w", f.Host, err)
			}
		}
		if f.Owned {
			if err := os.Chown(dst, int(uid), int(gid)); err != nil {
				return fmt.Errorf("jailer: hand %s to uid %d: %w", f.Host, uid, err)
			}
		}
	}
	return nil
}

func copyReadOnly(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// lockRun hands the chroot's /run, where Firecracker has made its API and
// vsock sockets, back to the daemon's uid, read-only to others: the jail
// keeps using the sockets but can no longer add, remove or replace any
// entry there.
func (l jailLayout) lockRun() error {
	run := filepath.Join(l.Root, "run")
	if err := os.Chown(run, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("jailer: take back %s: %w", run, err)
	}
	if err := os.Chmod(run, 0o755); err != nil {
		return fmt.Errorf("jailer: %w", err)
	}
	return nil
}

// jailCmd is the jailer's command for s: the chroot is made and the run
// dir's sockets and log become links into it first, so that a daemon
// killed from here on can still find the chroot (jailRootOf) to clean up.
func (s *starter) jailCmd(console *os.File) (*exec.Cmd, error) {
	l, j := s.jail, s.cfg.Jail
	// A chroot left by an earlier run (a daemon killed mid-start) goes.
	if err := removeJail(s.cfg.Dir, filepath.Dir(l.Root)); err != nil {
		return nil, err
	}
	links := map[string]string{
		APISocketPath(s.cfg.Dir): l.APISock,
		VsockPath(s.cfg.Dir):     l.Vsock,
		LogPath(s.cfg.Dir):       filepath.Join(l.Root, l.Log),
		MetricsPath(s.cfg.Dir):   filepath.Join(l.Root, l.Metrics),
	}
	for link, target := range links {
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("jailer: %w", err)
		}
		if err := os.Symlink(target, link); err != nil {
			return nil, fmt.Errorf("jailer: link %s to the chroot: %w", link, err)
		}
	}
	if err := l.prepare(j.UID, j.GID); err != nil {
		return nil, err
	}
	// Firecracker, as the jail's uid, appends to its log and metrics.
	for _, f := range []string{l.Log, l.Metrics} {
		p := filepath.Join(l.Root, f)
		fd, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err == nil {
			err = fd.Close()
		}
		if err == nil {
			err = os.Chown(p, int(j.UID), int(j.GID))
		}
		if err != nil {
			return nil, fmt.Errorf("jailer: %w", err)
		}
	}
	cmd := exec.Command(j.Binary, s.jailArg...)
	cmd.Dir = s.cfg.Dir
	cmd.Stdout, cmd.Stderr = console, console
	s.log.Debug("firecracker runs under the jailer", "jailer", j.Binary, "uid", j.UID, "chroot", l.Root)
	return cmd, nil
}

// jailRootOf reads the chroot of the jailed VM whose run dir is dir from
// the run dir's API socket link; ok is false when the VM is not jailed.
func jailRootOf(dir string) (string, bool) {
	t, err := os.Readlink(APISocketPath(dir))
	if err != nil || !filepath.IsAbs(t) {
		return "", false
	}
	root, ok := strings.CutSuffix(filepath.Clean(t), jailAPISock)
	if !ok || filepath.Base(root) != "root" {
		return "", false
	}
	return root, true
}

// removeJail removes a jailed VM's chroot, jailDir (the chroot's parent),
// and the links to it in its run dir. The writable drives, hard links of
// the VM's disks, are handed back to the daemon's uid first.
func removeJail(runDir, jailDir string) error {
	var errs []error
	drives := filepath.Join(jailDir, "root", "drives")
	ents, err := os.ReadDir(drives)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			if err := os.Lchown(filepath.Join(drives, e.Name()), os.Geteuid(), os.Getegid()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(jailDir); err != nil {
		errs = append(errs, err)
	}
	// The per-binary directory above it goes when it is empty.
	_ = os.Remove(filepath.Dir(jailDir))
	for _, p := range []string{APISocketPath(runDir), VsockPath(runDir), LogPath(runDir), MetricsPath(runDir)} {
		if runDir == "" {
			break
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jailer: clean up %s: %w", jailDir, err)
	}
	return nil
}

// CleanupJail is for a daemon that finds the run dir of a VM it no longer
// runs: when that VM was jailed, it kills every process still chrooted in
// its chroot (a Firecracker whose pid was never recorded), waiting at most
// strayWait for them to go, and removes the chroot. It returns how many
// processes it killed.
func CleanupJail(runDir string) int {
	root, ok := jailRootOf(runDir)
	if !ok {
		return 0
	}
	n := procwatch.KillMatching(func(p procwatch.Proc) bool { return p.InRoot(root) }, strayWait)
	_ = removeJail(runDir, filepath.Dir(root))
	return n
}

// strayWait bounds CleanupJail's wait for the processes it killed.
const strayWait = 5 * time.Second

// SweepJails removes the chroots under baseDir (the jails' --chroot-base-dir)
// that no process runs in: those of VMs whose run dir, and with it the link
// CleanupJail follows, is gone (a host reboot empties the runtime dir). It
// kills nothing, so a running VM's chroot always stays. It returns the
// chroots it removed.
func SweepJails(baseDir string) []string {
	dirs, _ := filepath.Glob(filepath.Join(baseDir, "*", "*"))
	if len(dirs) == 0 {
		return nil
	}
	type key struct{ dev, ino uint64 }
	inUse := map[key]bool{}
	procs, err := procwatch.Scan()
	if err != nil {
		return nil // no process table: any chroot may be in use
	}
	for _, p := range procs {
		if fi, err := p.Root(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				inUse[key{st.Dev, st.Ino}] = true
			}
		}
	}
	var removed []string
	for _, d := range dirs {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(d, "root"), &st); err == nil && inUse[key{st.Dev, st.Ino}] {
			continue
		}
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue
		}
		if removeJail("", d) == nil {
			removed = append(removed, d)
		}
	}
	return removed
}

// JailFits says whether cfg can run under j: nil, or why not (a name the
// jailer refuses, socket paths in the chroot that are too long).
func JailFits(cfg Config, j Jail) error {
	if cfg.Binary == "" {
		cfg.Binary = "firecracker"
	}
	_, _, err := planJail(cfg, j)
	return err
}
