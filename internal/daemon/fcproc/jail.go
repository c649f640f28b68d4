package fcproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Jail describes running Firecracker under its jailer: chrooted into a
// directory of its own, as an unprivileged uid and gid, in a new mount
// namespace, with only the device nodes it needs.
//
// Only the jailer's command line and the chroot's layout are built here
// (planJail, prepare); Start does not use them yet, and nothing here has
// run against a real jailer. See docs/security.md.
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
