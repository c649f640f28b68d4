package ociimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	xattrPAXPrefix = "SCHILY.xattr."
)

// ApplyLayer applies one uncompressed layer tar stream onto root, the way an
// overlay of the layers would look: entries in order, ".wh.NAME" deletes NAME,
// ".wh..wh..opq" hides the lower contents of its directory. Entries that would
// land outside root (".." components, writes through a symlinked parent,
// hardlinks to outside or through a symlink) are refused with an error naming
// layerName and the entry. xattrs the tree's filesystem cannot hold are
// skipped. Run by a user, it leaves owners, modes beyond the owner's and
// device nodes out of the tree (device nodes become empty files), since
// only Import can write those into an image.
func ApplyLayer(root string, layer io.Reader, layerName string) error {
	a := newApplier(root, Limits{})
	if os.Geteuid() != 0 {
		a = newRootlessApplier(root, Limits{})
	}
	return a.apply(context.Background(), layer, layerName)
}

// Default bounds on what the applier keeps per entry; see Limits.
const (
	DefaultMaxEntries   = 500_000
	DefaultMaxPathBytes = 64 << 20
)

// Limits bound the state the applier keeps per tar entry, summed over all
// layers of an image, so that a layer of millions of entries cannot exhaust
// memory. Zero fields take the defaults.
type Limits struct {
	// MaxEntries is the most tar entries (files, directories, links,
	// whiteouts) the image may have; the config key is oci_max_entries.
	MaxEntries int64
	// MaxPathBytes is the most bytes all entry names together may have; the
	// config key is oci_max_path_bytes.
	MaxPathBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxPathBytes <= 0 {
		l.MaxPathBytes = DefaultMaxPathBytes
	}
	return l
}

// applier applies layers in order onto one tree and remembers, across layers,
// which directories are known to be real directories inside the root.
type applier struct {
	root     string
	dirs     map[string]bool // rel paths verified to be real directories
	warnings []string
	// rootless: owners, full modes, device nodes and xattrs go to meta
	// (see manifest.go) instead of onto the tree.
	rootless bool
	meta     map[uint64]*inodeMeta

	limits    Limits
	entries   int64 // tar entries seen, all layers
	pathBytes int64 // bytes of their names

	// per-layer state
	layerPaths map[string]bool // rel path → true: entry of this layer; false: ancestor of one
	dirMeta    []dirMeta
}

type dirMeta struct {
	rel   string
	mode  os.FileMode
	atime time.Time
	mtime time.Time
}

func newApplier(root string, l Limits) *applier {
	return &applier{root: root, dirs: map[string]bool{".": true}, limits: l.withDefaults()}
}

// newRootlessApplier makes an applier for a process that cannot set owners
// or make device nodes; see manifest.go.
func newRootlessApplier(root string, l Limits) *applier {
	a := newApplier(root, l)
	a.rootless = true
	a.meta = map[uint64]*inodeMeta{}
	return a
}

// count charges one entry against the limits, before anything about it is
// kept.
func (a *applier) count(hdr *tar.Header, layer string) error {
	a.entries++
	a.pathBytes += int64(len(hdr.Name))
	if a.entries > a.limits.MaxEntries {
		return fmt.Errorf("layer %s: the image has more than %d entries, the limit (oci_max_entries in the configuration; raise it if the image is trusted and you have the memory, about 300 bytes an entry)", layer, a.limits.MaxEntries)
	}
	if a.pathBytes > a.limits.MaxPathBytes {
		return fmt.Errorf("layer %s: the names of the image's entries add up to more than %d bytes, the limit (oci_max_path_bytes in the configuration; raise it if the image is trusted and you have the memory)", layer, a.limits.MaxPathBytes)
	}
	return nil
}

func (a *applier) warn(format string, args ...any) {
	if len(a.warnings) < 200 {
		a.warnings = append(a.warnings, fmt.Sprintf(format, args...))
	} else if len(a.warnings) == 200 {
		a.warnings = append(a.warnings, "further warnings suppressed")
	}
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// apply reads one layer. ctx is checked between entries.
func (a *applier) apply(ctx context.Context, layer io.Reader, layerName string) error {
	a.layerPaths = map[string]bool{}
	a.dirMeta = a.dirMeta[:0]
	tr := tar.NewReader(layer)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("layer %s: read tar stream: %w", layerName, err)
		}
		if err := a.count(hdr, layerName); err != nil {
			return err
		}
		if err := a.entry(tr, hdr, layerName); err != nil {
			return err
		}
	}
	// Directory modes and times last: creating children changes a
	// directory's mtime, and a read-only directory would block them.
	// A later entry of the layer may have replaced or removed the directory,
	// so each is looked up again without following symlinks.
	for i := len(a.dirMeta) - 1; i >= 0; i-- {
		m := a.dirMeta[i]
		abs, err := a.ensureDir(m.rel, m.rel, layerName, false)
		if err != nil || abs == "" {
			continue
		}
		mode := m.mode
		if a.rootless {
			mode = m.mode.Perm() | 0o700 // the exact mode is in the manifest
		}
		if err := os.Chmod(abs, mode); err != nil {
			return fmt.Errorf("layer %s: chmod /%s: %w", layerName, m.rel, err)
		}
		setTimes(abs, m.atime, m.mtime)
	}
	return nil
}

// cleanName turns a tar name into a clean relative path, refusing ".."
// components. "/" and "./" map to ".".
func cleanName(n string) (string, error) {
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", errors.New(`path has a ".." component`)
		}
	}
	if strings.IndexByte(n, 0) >= 0 {
		return "", errors.New("path has a NUL byte")
	}
	rel := path.Clean("/" + n)[1:]
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

func refuse(layer, name string, format string, args ...any) error {
	return fmt.Errorf("layer %s: refusing entry %q: %s", layer, name, fmt.Sprintf(format, args...))
}

func (a *applier) entry(tr *tar.Reader, hdr *tar.Header, layer string) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return refuse(layer, hdr.Name, "%v", err)
	}
	base := path.Base(rel)
	dir := path.Dir(rel)

	if strings.HasPrefix(base, whiteoutPrefix) {
		if base == opaqueMarker {
			return a.opaque(dir, hdr.Name, layer)
		}
		if strings.HasPrefix(base, whiteoutMeta) {
			return nil // other aufs metadata: not part of the tree
		}
		target := base[len(whiteoutPrefix):]
		if target == "" || target == "." || target == ".." {
			return refuse(layer, hdr.Name, "whiteout names no file")
		}
		return a.whiteout(path.Join(dir, target), hdr.Name, layer)
	}

	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return refuse(layer, hdr.Name, "the root can only be a directory")
		}
		if err := a.own(a.root, hdr, layer, unix.S_IFDIR, 0); err != nil {
			return err
		}
		a.dirMeta = append(a.dirMeta, dirMeta{".", hdrMode(hdr), hdr.AccessTime, hdr.ModTime})
		return nil
	}

	parent, err := a.ensureDir(dir, hdr.Name, layer, true)
	if err != nil {
		return err
	}
	abs := filepath.Join(parent, base)
	a.markLayerPath(rel)

	// Whatever is at abs now is replaced, except a directory by a directory.
	existing, lerr := os.Lstat(abs)
	exists := lerr == nil
	if lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
		return fmt.Errorf("layer %s: inspect %s: %w", layer, hdr.Name, lerr)
	}
	if exists && !(hdr.Typeflag == tar.TypeDir && existing.IsDir()) {
		if hdr.Typeflag == tar.TypeLink && existing.Mode().IsRegular() {
			// Linking a name to itself is a no-op; otherwise replace below.
			if same, _ := a.sameAsLinkTarget(existing, hdr.Linkname); same {
				return nil
			}
		}
		if err := a.remove(rel, abs, existing.IsDir()); err != nil {
			return fmt.Errorf("layer %s: replace %s: %w", layer, hdr.Name, err)
		}
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists || !existing.IsDir() {
			if err := os.Mkdir(abs, 0o700); err != nil {
				return fmt.Errorf("layer %s: mkdir %s: %w", layer, hdr.Name, err)
			}
		}
		a.dirs[rel] = true
		if err := a.own(abs, hdr, layer, unix.S_IFDIR, 0); err != nil {
			return err
		}
		a.dirMeta = append(a.dirMeta, dirMeta{rel, hdrMode(hdr), hdr.AccessTime, hdr.ModTime})
		return nil

	case tar.TypeReg, tar.TypeGNUSparse:
		f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("layer %s: create %s: %w", layer, hdr.Name, err)
		}
		bp := copyBufPool.Get().(*[]byte)
		_, cerr := io.CopyBuffer(onlyWriter{f}, tr, *bp)
		copyBufPool.Put(bp)
		if cerr != nil {
			_ = f.Close()
			return fmt.Errorf("layer %s: write %s: %w", layer, hdr.Name, cerr)
		}
		if !a.rootless {
			if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
				_ = f.Close()
				return ownErr(layer, hdr, err)
			}
			// After chown, which clears setuid and setgid.
			if err := f.Chmod(hdrMode(hdr)); err != nil {
				_ = f.Close()
				return fmt.Errorf("layer %s: chmod %s: %w", layer, hdr.Name, err)
			}
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("layer %s: write %s: %w", layer, hdr.Name, err)
		}
		if err := a.own(abs, hdr, layer, unix.S_IFREG, 0); err != nil {
			return err
		}
		setTimes(abs, hdr.AccessTime, hdr.ModTime)
		return nil

	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return refuse(layer, hdr.Name, "symlink with an empty target")
		}
		if err := os.Symlink(hdr.Linkname, abs); err != nil {
			return fmt.Errorf("layer %s: symlink %s: %w", layer, hdr.Name, err)
		}
		if err := a.own(abs, hdr, layer, unix.S_IFLNK, 0); err != nil {
			return err
		}
		setTimes(abs, hdr.AccessTime, hdr.ModTime)
		return nil

	case tar.TypeLink:
		target, err := a.linkTarget(hdr.Linkname)
		if err != nil {
			return refuse(layer, hdr.Name, "hardlink to %q: %v", hdr.Linkname, err)
		}
		if err := os.Link(target, abs); err != nil {
			return fmt.Errorf("layer %s: hardlink %s to %s: %w", layer, hdr.Name, hdr.Linkname, err)
		}
		return nil

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(hdrMode(hdr).Perm())
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		rdev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if a.rootless && hdr.Typeflag != tar.TypeFifo {
			// A placeholder; the node itself is made in the image.
			f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("layer %s: create placeholder of device node %s: %w", layer, hdr.Name, err)
			}
			_ = f.Close()
		} else if err := unix.Mknod(abs, mode, int(rdev)); err != nil {
			return fmt.Errorf("layer %s: mknod %s (%d:%d): %w", layer, hdr.Name, hdr.Devmajor, hdr.Devminor, err)
		}
		if err := a.own(abs, hdr, layer, mode&unix.S_IFMT, rdev); err != nil {
			return err
		}
		if !a.rootless {
			// mknod is subject to the umask; chmod sets the exact mode (and
			// setuid/sticky bits mknod would ignore).
			if err := os.Chmod(abs, hdrMode(hdr)); err != nil {
				return fmt.Errorf("layer %s: chmod %s: %w", layer, hdr.Name, err)
			}
		}
		setTimes(abs, hdr.AccessTime, hdr.ModTime)
		return nil

	default:
		a.warn("layer %s: skipped entry %s of unsupported tar type %q", layer, hdr.Name, string(hdr.Typeflag))
		return nil
	}
}

// onlyWriter hides ReadFrom so io.CopyBuffer uses our buffer.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

func hdrMode(hdr *tar.Header) os.FileMode {
	m := os.FileMode(hdr.Mode & 0o777)
	if hdr.Mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func setTimes(abs string, atime, mtime time.Time) {
	if mtime.IsZero() {
		return
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, abs, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// own gives the entry at abs hdr's owner and xattrs: on the tree as root,
// in the manifest without root (regular files already created; typ is the
// S_IF* type, rdev the device number of a device node). The owner is
// applied before any mode change, since chown clears setuid and setgid.
func (a *applier) own(abs string, hdr *tar.Header, layer string, typ uint32, rdev uint64) error {
	if a.rootless {
		if err := a.keep(abs, typ, hdr.Uid, hdr.Gid, hdr.Mode, hdr.PAXRecords, rdev, layer, hdr.Name); err != nil {
			return fmt.Errorf("layer %s: record owner of %s: %w", layer, hdr.Name, err)
		}
		return nil
	}
	if typ != unix.S_IFREG { // regular files: done through their descriptor
		if err := os.Lchown(abs, hdr.Uid, hdr.Gid); err != nil {
			return ownErr(layer, hdr, err)
		}
	}
	a.xattrs(abs, hdr, layer)
	return nil
}

func ownErr(layer string, hdr *tar.Header, err error) error {
	return fmt.Errorf("layer %s: give %s its owner %d:%d: %w (the import cannot make the image exactly; if the daemon runs in a user namespace, map these ids)", layer, hdr.Name, hdr.Uid, hdr.Gid, err)
}

func (a *applier) xattrs(abs string, hdr *tar.Header, layer string) {
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, xattrPAXPrefix) {
			continue
		}
		key := k[len(xattrPAXPrefix):]
		if key == "" {
			continue
		}
		if err := unix.Lsetxattr(abs, key, []byte(v), 0); err != nil {
			a.warn("layer %s: xattr %s on %s not kept: %v", layer, key, hdr.Name, err)
		}
	}
}

// markLayerPath records rel and its ancestors as present in the current layer.
func (a *applier) markLayerPath(rel string) {
	a.layerPaths[rel] = true
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		if _, ok := a.layerPaths[d]; ok {
			break
		}
		a.layerPaths[d] = false
	}
}

// ensureDir returns the absolute path of the directory rel, checking that each
// component is a real directory (not a symlink). Missing components are
// created when create is set; otherwise "" and no error are returned for a
// missing directory.
func (a *applier) ensureDir(rel, name, layer string, create bool) (string, error) {
	abs := filepath.Join(a.root, filepath.FromSlash(rel))
	if a.dirs[rel] {
		return abs, nil
	}
	parent := path.Dir(rel)
	pabs, err := a.ensureDir(parent, name, layer, create)
	if err != nil || pabs == "" {
		return "", err
	}
	st, err := os.Lstat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !create {
			return "", nil
		}
		if err := os.Mkdir(abs, 0o755); err != nil {
			return "", fmt.Errorf("layer %s: create parent /%s of %q: %w", layer, rel, name, err)
		}
		if a.rootless {
			if err := a.keepDefault(abs); err != nil {
				return "", fmt.Errorf("layer %s: create parent /%s of %q: %w", layer, rel, name, err)
			}
		}
		a.markLayerPath(rel)
		a.layerPaths[rel] = false
	case err != nil:
		return "", fmt.Errorf("layer %s: inspect parent /%s of %q: %w", layer, rel, name, err)
	case st.Mode()&fs.ModeSymlink != 0:
		return "", refuse(layer, name, "parent /%s is a symlink; writing through it could leave the root", rel)
	case !st.IsDir():
		return "", refuse(layer, name, "parent /%s is not a directory", rel)
	}
	a.dirs[rel] = true
	return abs, nil
}

// remove deletes rel and forgets cached directories under it.
func (a *applier) remove(rel, abs string, isDir bool) error {
	if isDir {
		for d := range a.dirs {
			if d == rel || strings.HasPrefix(d, rel+"/") {
				delete(a.dirs, d)
			}
		}
		return os.RemoveAll(abs)
	}
	return os.Remove(abs)
}

func (a *applier) whiteout(rel, name, layer string) error {
	if rel == "." {
		return refuse(layer, name, "whiteout of the root")
	}
	parent, err := a.ensureDir(path.Dir(rel), name, layer, false)
	if err != nil || parent == "" {
		return err // nothing below to hide
	}
	abs := filepath.Join(parent, path.Base(rel))
	st, err := os.Lstat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("layer %s: whiteout %s: %w", layer, name, err)
	}
	if err := a.remove(rel, abs, st.IsDir()); err != nil {
		return fmt.Errorf("layer %s: whiteout %s: %w", layer, name, err)
	}
	return nil
}

// opaque hides what lower layers put under dir, keeping what this layer
// already wrote there.
func (a *applier) opaque(dir, name, layer string) error {
	abs, err := a.ensureDir(dir, name, layer, true)
	if err != nil {
		return err
	}
	if dir != "." {
		a.markLayerPath(dir)
		a.layerPaths[dir] = false
	}
	return a.clearLower(dir, abs, name, layer)
}

func (a *applier) clearLower(dir, abs, name, layer string) error {
	ents, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("layer %s: opaque directory %s: %w", layer, name, err)
	}
	for _, e := range ents {
		child := path.Join(dir, e.Name())
		cabs := filepath.Join(abs, e.Name())
		_, inLayer := a.layerPaths[child]
		isDir := e.Type().IsDir()
		switch {
		case !inLayer:
			if err := a.remove(child, cabs, isDir); err != nil {
				return fmt.Errorf("layer %s: opaque directory %s: %w", layer, name, err)
			}
		case isDir:
			if err := a.clearLower(child, cabs, name, layer); err != nil {
				return err
			}
		}
	}
	return nil
}

// linkTarget resolves a hardlink target inside the root without following
// symlinks in its parents. The target must exist and not be a directory.
func (a *applier) linkTarget(linkname string) (string, error) {
	rel, err := cleanName(linkname)
	if err != nil {
		return "", err
	}
	if rel == "." {
		return "", errors.New("target is the root")
	}
	parent, err := a.ensureDir(path.Dir(rel), linkname, "", false)
	if err != nil {
		return "", errors.New("a parent of the target is a symlink or not a directory")
	}
	if parent == "" {
		return "", errors.New("target does not exist")
	}
	abs := filepath.Join(parent, path.Base(rel))
	st, err := os.Lstat(abs)
	if err != nil {
		return "", errors.New("target does not exist")
	}
	if st.IsDir() {
		return "", errors.New("target is a directory")
	}
	return abs, nil
}

func (a *applier) sameAsLinkTarget(existing fs.FileInfo, linkname string) (bool, error) {
	target, err := a.linkTarget(linkname)
	if err != nil {
		return false, err
	}
	st, err := os.Lstat(target)
	if err != nil {
		return false, err
	}
	return os.SameFile(existing, st), nil
}
