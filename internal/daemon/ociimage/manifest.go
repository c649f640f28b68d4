package ociimage

import (
	"banger/internal/childproc"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An import without the privilege to set owners and make device nodes (a
// user's bangerd) still makes the image a root import makes. The tree is
// unpacked as the user, with owner-only permissions on disk so that no
// setuid file or device node of the image ever exists on the host, and what
// the tree cannot carry is kept per inode: the owner, the full mode (setuid,
// setgid and sticky bits included), the device numbers of device nodes
// (which stay empty placeholder files in the tree) and every extended
// attribute. After mkfs.ext4 -d has copied the tree, one debugfs run writes
// that metadata into the unmounted image. debugfs edits only the image file,
// which the user owns; no privilege is involved at any step.

// inodeMeta is what the unprivileged tree cannot carry for one inode.
type inodeMeta struct {
	uid, gid uint32
	mode     uint32 // st_mode: file type and all permission bits
	rdev     uint64 // device nodes only
	ctime    int64  // ns; set by freeze for non-directories
	xattrs   []xattr
}

type xattr struct{ key, val string }

// privileged reports whether this process can give files any owner and make
// device nodes in dir, which a faithful import in place needs.
func privileged(dir string) bool {
	if os.Geteuid() != 0 {
		return false
	}
	probe := filepath.Join(dir, ".privilege-probe")
	_ = os.Remove(probe)
	defer os.Remove(probe)
	if err := unix.Mknod(probe, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		return false
	}
	return os.Lchown(probe, 1234, 5678) == nil
}

// keep records hdr's owner, mode (with typ, an S_IF* constant) and xattrs for
// the inode st, replacing what an earlier inode of that number left.
// An xattr whose name the kernel would refuse (a root import could not
// set it either) is left out with a warning naming layer and entry.
//
// What is kept stays in memory until mkfs, so it is bounded: a value too
// long for a debugfs command (which writeManifest would refuse anyway)
// fails the import at once, and all values together may hold
// maxKeptXattrBytes.
func (a *applier) keep(st *syscall.Stat_t, typ uint32, uid, gid int, perm int64, pax map[string]string, rdev uint64, layer, name string) error {
	m := &inodeMeta{uid: uint32(uid), gid: uint32(gid), mode: typ | uint32(perm&0o7777), rdev: rdev}
	for k, v := range pax {
		if key, ok := strings.CutPrefix(k, xattrPAXPrefix); ok && key != "" {
			if !validXattrName(key) {
				a.warn("layer %s: xattr %q on %s not kept: not a name Linux accepts (a known namespace prefix and at most 255 bytes)", layer, key, name)
				continue
			}
			if 4*len(v)+len(key) > maxDebugfsLine {
				return fmt.Errorf("layer %s: the xattr %s on %s holds %d bytes, more than a debugfs command can write: import as root to keep it", layer, key, name, len(v))
			}
			a.xattrBytes += int64(len(key) + len(v))
			if a.xattrBytes > maxKeptXattrBytes {
				return fmt.Errorf("layer %s: the image's xattrs add up to more than %d bytes, more than an import without root keeps in memory: import as root to keep them", layer, maxKeptXattrBytes)
			}
			m.xattrs = append(m.xattrs, xattr{key, v})
		}
	}
	a.meta[st.Ino] = m
	return nil
}

// maxKeptXattrBytes bounds the xattr names and values an import without
// root keeps (labels on every file of a large image come to a few MiB);
// tests lower it.
var maxKeptXattrBytes int64 = 256 << 20

// validXattrName reports whether Linux would accept key as an extended
// attribute's name: one of its namespaces, at most XATTR_NAME_MAX bytes, no
// NUL. Names reach debugfs's command line, so this also keeps a name from
// passing for an option there (ea_set -f reads a host file).
func validXattrName(key string) bool {
	if len(key) > 255 || strings.IndexByte(key, 0) >= 0 {
		return false
	}
	for _, ns := range []string{"user.", "trusted.", "security.", "system."} {
		if strings.HasPrefix(key, ns) && len(key) > len(ns) {
			return true
		}
	}
	return false
}

// keepDefault records a directory the applier made itself: root's, with the
// mode it got.
func (a *applier) keepDefault(st *syscall.Stat_t) {
	a.meta[st.Ino] = &inodeMeta{mode: st.Mode}
}

func lstat(p string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return &st, nil
}

// freeze drops what was recorded for inodes no longer in the tree and notes
// the change time of the others, so that a file a later step (opts.Extra)
// puts in place of one of them is not taken for it even if it gets the
// freed inode's number: such files, like all files the applier did not make,
// end up root's, as they would under a root import.
func (a *applier) freeze() error {
	live := make(map[uint64]bool, len(a.meta))
	err := filepath.WalkDir(a.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := lstat(p)
		if err != nil {
			return err
		}
		if m := a.meta[st.Ino]; m != nil {
			live[st.Ino] = true
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				m.ctime = st.Ctim.Nano()
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for ino := range a.meta {
		if !live[ino] {
			delete(a.meta, ino)
		}
	}
	// Change times come from a coarse clock: let it move on, so that a
	// file made from now on cannot share a recorded file's change time.
	time.Sleep(20 * time.Millisecond)
	return nil
}

// dfQuote quotes a path or name for debugfs's command parser, which takes a
// doubled quote inside quotes as a quote and nothing else as special.
func dfQuote(s string) (string, error) {
	if strings.ContainsAny(s, "\n\r") {
		return "", fmt.Errorf("the name %q has a line break, which debugfs cannot be told: import as root to keep it", s)
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`, nil
}

// dfBytes writes v as a debugfs string of \x escapes, safe for any bytes.
func dfBytes(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		fmt.Fprintf(&b, `\x%02x`, v[i])
	}
	b.WriteByte('"')
	return b.String()
}

type devNode struct {
	paths []string // debugfs paths of the placeholder's names
	m     *inodeMeta
	atime int64
	mtime int64
}

// writeManifest walks the tree and writes to cmdPath the debugfs commands
// that give every inode in the image its recorded metadata; inodes nothing
// was recorded for (the files opts.Extra added, the root when the image
// does not name it) become root's and keep their mode. It returns the
// number of commands.
func writeManifest(root string, meta map[uint64]*inodeMeta, cmdPath string) (n int, err error) {
	f, err := os.OpenFile(cmdPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	var long error
	emit := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		if len(line) > maxDebugfsLine {
			// debugfs would read the rest as further commands.
			if long == nil {
				long = fmt.Errorf("the image's metadata for %.200q needs a debugfs command of %d bytes, more than debugfs reads as one line (%d): import as root to keep it", line, len(line), maxDebugfsLine)
			}
			return
		}
		w.WriteString(line)
		w.WriteByte('\n')
		n++
	}
	seen := map[uint64]bool{}
	devs := map[uint64]*devNode{}
	var devOrder []uint64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		dp := "/" + filepath.ToSlash(rel)
		if rel == "." {
			dp = "/"
		}
		q, err := dfQuote(dp)
		if err != nil {
			return err
		}
		st, err := lstat(p)
		if err != nil {
			return err
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if dn := devs[st.Ino]; dn != nil {
			dn.paths = append(dn.paths, dp)
			return nil
		}
		if seen[st.Ino] {
			return nil // another name of an inode already done
		}
		seen[st.Ino] = true
		m := meta[st.Ino]
		if m != nil && !isDir && m.ctime != st.Ctim.Nano() {
			m = nil // not the file that was recorded
		}
		if m == nil {
			emit("sif %s uid 0", q)
			emit("sif %s gid 0", q)
			return nil
		}
		if t := m.mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
			if maj, mnr := unix.Major(m.rdev), unix.Minor(m.rdev); maj > 0xffff || mnr > 0xffff {
				return fmt.Errorf("the device node %s is %d:%d, and debugfs cannot make a device number above 65535: import as root to keep it", dp, maj, mnr)
			}
			devs[st.Ino] = &devNode{paths: []string{dp}, m: m, atime: st.Atim.Sec, mtime: st.Mtim.Sec}
			devOrder = append(devOrder, st.Ino)
			return nil
		}
		emit("sif %s uid %d", q, m.uid)
		emit("sif %s gid %d", q, m.gid)
		emit("sif %s mode 0%o", q, m.mode)
		for _, x := range m.xattrs {
			k, err := dfQuote(x.key)
			if err != nil {
				return err
			}
			emit("ea_set %s %s %s", q, k, dfBytes(x.val))
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	// Device nodes: the placeholders go, real nodes take their place.
	for _, ino := range devOrder {
		dn := devs[ino]
		first := dn.paths[0]
		for _, p := range dn.paths {
			q, _ := dfQuote(p)
			emit("rm %s", q)
		}
		dq, _ := dfQuote(path.Dir(first))
		bq, _ := dfQuote(path.Base(first))
		kind := "c"
		if dn.m.mode&unix.S_IFMT == unix.S_IFBLK {
			kind = "b"
		}
		emit("cd %s", dq)
		emit("mknod %s %s %d %d", bq, kind, unix.Major(dn.m.rdev), unix.Minor(dn.m.rdev))
		emit("cd /")
		q, _ := dfQuote(first)
		emit("sif %s uid %d", q, dn.m.uid)
		emit("sif %s gid %d", q, dn.m.gid)
		emit("sif %s mode 0%o", q, dn.m.mode)
		emit("sif %s atime @%d", q, dn.atime)
		emit("sif %s mtime @%d", q, dn.mtime)
		for _, x := range dn.m.xattrs {
			k, err := dfQuote(x.key)
			if err != nil {
				return n, err
			}
			emit("ea_set %s %s %s", q, k, dfBytes(x.val))
		}
		for _, p := range dn.paths[1:] {
			lq, _ := dfQuote(p)
			emit("ln %s %s", q, lq)
		}
		if len(dn.paths) > 1 {
			emit("sif %s links_count %d", q, len(dn.paths))
		}
	}
	if long != nil {
		return n, long
	}
	return n, w.Flush()
}

// maxDebugfsLine is the longest command line debugfs -f reads as one: it
// reads its command file with fgets into a buffer of BUFSIZ (8192) bytes,
// and runs whatever is left of a longer line as commands of their own.
const maxDebugfsLine = 8190

// applyManifest runs debugfs's commands on the unmounted image. debugfs
// exits 0 whatever its commands do and reports their failures on stderr, so
// any line there but its banner is a failure.
func applyManifest(ctx context.Context, debugfs, cmdPath, image string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, debugfs, "-w", "-f", cmdPath, image)
	cmd.Stderr = &stderr
	if err := childproc.Run(cmd); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("debugfs -w -f %s %s: %w: %s", cmdPath, image, err, strings.TrimSpace(stderr.String()))
	}
	var bad []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return fmt.Errorf("writing owners, modes, device nodes and attributes into the image with debugfs failed: %s", strings.Join(bad, "; "))
	}
	return nil
}

// findDebugfs looks for debugfs beside mkfs.ext4 (both come with e2fsprogs,
// in an sbin directory a user's PATH may lack), then on PATH.
func findDebugfs(mkfs string) (string, error) {
	p := filepath.Join(filepath.Dir(mkfs), "debugfs")
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	if p, err := exec.LookPath("debugfs"); err == nil {
		return p, nil
	}
	return "", errors.New("debugfs not found: an import without root writes owners, modes and device nodes into the image with debugfs; install e2fsprogs")
}
