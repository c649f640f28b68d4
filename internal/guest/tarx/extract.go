package tarx

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Options tune Extract. The zero value is the strict one, for streams
// from a party that is not trusted (a guest answering a copy-out): nothing
// existing is replaced, setuid and setgid bits are dropped, owners are not
// applied, and devices and FIFOs are refused.
type Options struct {
	// Top, when set, is the only name the stream may create in the
	// destination: every entry must be Top or lie under Top/. An entry
	// named otherwise fails the extraction with an *EscapeError naming it.
	// Without Replace, Top must not exist beforehand, and when the
	// extraction fails everything it created under Top is removed.
	Top string
	// Replace lets entries replace existing files and symlinks (each
	// atomically: a new file is written under a temporary name and renamed
	// over the old one, so a failed copy leaves the old one whole; a
	// symlink is replaced, never followed) and merge into existing
	// directories, whose attributes are then set from the stream. Without
	// it, an entry whose name exists and was not made by this extraction
	// is refused.
	Replace bool
	// Chown applies each entry's uid and gid. Only root can do this; pass
	// os.Geteuid() == 0.
	Chown bool
	// KeepSetid keeps the setuid and setgid bits of entries; without it
	// they are dropped.
	KeepSetid bool
	// Umask is cleared from every entry's permission bits (for a copy
	// that does not keep modes: pass the process's umask).
	Umask fs.FileMode
	// Skip, when set, is told about each device, FIFO or socket entry,
	// which is then skipped instead of failing the extraction. Such
	// entries are never created.
	Skip func(name, what string)
	// MaxEntries bounds the number of entries in the stream; 0 means no
	// bound. Beyond it the extraction fails.
	MaxEntries int
	// MaxTrailer, when positive, makes Extract read r to its end after the
	// tar stream's end-of-archive marker, and fail if more than
	// MaxTrailer bytes follow it (a tar writer pads to its record size;
	// more is not the end of a tar stream). When 0, the caller reads on.
	MaxTrailer int64
}

// maxNameLen bounds an entry's name and link target (Linux's PATH_MAX).
const maxNameLen = 4096

// maxDirBytes bounds the names of the directories Extract keeps in memory
// (to set their attributes at the end), so that a stream of millions of
// directories cannot exhaust memory.
const maxDirBytes = 64 << 20

// EscapeError reports a tar entry that would be written outside the
// destination directory: an absolute name, a ".." component, a path that
// passes through a symlink, or a name outside Options.Top.
type EscapeError struct {
	Name   string
	Reason string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("refusing tar entry %q: %s", e.Name, e.Reason)
}

// ExistsError reports an entry whose name already exists in the
// destination and was not made by this extraction, without
// Options.Replace.
type ExistsError struct {
	Name string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("refusing tar entry %q: something of that name already exists, and this copy replaces nothing", e.Name)
}

// FileSource is a tar stream that can move its bytes into a file without
// handing them to the caller, for example with splice(2) from a socket.
// ReadToFile moves at most n bytes, and at least one, of the stream into f
// at its current offset, exactly as if they were read with Read and written
// to f, and returns how many it moved; at the end of the stream it returns
// io.EOF as Read does.
type FileSource interface {
	io.Reader
	ReadToFile(f *os.File, n int) (int, error)
}

// Extract unpacks the tar stream r into the existing directory dir.
// Regular files, directories, symlinks and hard links are created with the
// permissions and modification times of their entries, as opts allows.
// Entries that would escape dir (or Options.Top) are refused with
// *EscapeError, entries that would replace what exists with *ExistsError
// (unless Options.Replace), and nothing is ever written outside dir: all
// writes go through an os.Root, no symlink is followed, and every parent
// of an entry is checked to be a real directory. Directory modes are
// applied at the end so a read-only directory can still be filled. A
// regular file whose contents could not be written in full is removed. If
// r is a FileSource, the contents of regular files go to the files with
// its ReadToFile.
func Extract(ctx context.Context, r io.Reader, dir string, opts Options) (err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	defer root.Close()
	src := &divertReader{r: r}
	src.fs, _ = r.(FileSource)
	x := &extractor{ctx: ctx, root: root, opts: opts, safe: map[string]bool{".": true}, made: map[string]int{}, src: src}
	if opts.Top != "" {
		if opts.Top != path.Clean(opts.Top) || strings.Contains(opts.Top, "/") || opts.Top == "." || opts.Top == ".." {
			return fmt.Errorf("extract into %s: %q is not a single name", dir, opts.Top)
		}
		if !opts.Replace {
			if _, err := root.Lstat(opts.Top); err == nil {
				return fmt.Errorf("extract into %s: %w", dir, &ExistsError{Name: opts.Top})
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("extract into %s: %w", dir, err)
			}
			defer func() {
				if err != nil && x.madeTop {
					if cerr := x.removeTop(); cerr != nil {
						err = fmt.Errorf("%w; removing what this copy made in %s also failed: %v", err, path.Join(dir, opts.Top), cerr)
					}
				}
			}()
		}
	}
	tr := tar.NewReader(src)
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("extract into %s: reading tar stream: %w", dir, err)
		}
		if opts.MaxEntries > 0 && n >= opts.MaxEntries {
			return fmt.Errorf("extract into %s: the stream holds more than %d entries; refusing the rest", dir, opts.MaxEntries)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extract into %s: %w", dir, err)
		}
	}
	if opts.MaxTrailer > 0 {
		n, err := io.Copy(io.Discard, io.LimitReader(src, opts.MaxTrailer+1))
		if err != nil {
			return fmt.Errorf("extract into %s: reading past the tar stream's end: %w", dir, err)
		}
		if n > opts.MaxTrailer {
			return fmt.Errorf("extract into %s: more than %d bytes follow the tar stream's end; the stream is not a tar archive of what was asked", dir, opts.MaxTrailer)
		}
	}
	if err := x.finishDirs(); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	return nil
}

type extractor struct {
	ctx  context.Context
	root *os.Root
	opts Options
	// safe holds directories known to be real directories (not symlinks)
	// inside the root. It is a cache, emptied when it grows large.
	safe map[string]bool
	// made holds the directories this extraction created (and, with
	// Replace, the existing ones the stream names), each with its index
	// in dirs, or -1 while no entry for it has come.
	made     map[string]int
	dirs     []dirAttrs
	dirBytes int
	madeTop  bool
	buf      []byte // file copies, in chunks the size of a data frame
	src      *divertReader
}

// dirAttrs is what finishDirs applies to a directory.
type dirAttrs struct {
	name         string
	mode         fs.FileMode
	uid, gid     int
	atime, mtime time.Time
}

// divertReader is the stream under archive/tar. Normally it passes reads
// through. While a regular file's contents are being extracted from a
// FileSource, to is that file: a read of n bytes then moves them into the
// file with ReadToFile and leaves the caller's buffer alone. archive/tar
// reads a regular file's contents by passing its caller's reads down to the
// stream (never more than the entry has left), so it keeps its account of
// the entry, its padding and what follows, while the bytes go from the
// stream to the file without passing through this process's buffers. left
// bounds what may be moved, so nothing past the entry can land in the file.
type divertReader struct {
	r    io.Reader
	fs   FileSource // r, when it is one
	to   *os.File
	left int64
}

func (d *divertReader) Read(p []byte) (int, error) {
	if d.to == nil {
		return d.r.Read(p)
	}
	n := int(min(int64(len(p)), d.left))
	if n == 0 {
		return 0, errors.New("tar reader asked for more than the entry holds")
	}
	m, err := d.fs.ReadToFile(d.to, n)
	d.left -= int64(m)
	return m, err
}

// copyInto writes the contents of the current entry into f.
func (x *extractor) copyInto(f *os.File, tr *tar.Reader, hdr *tar.Header) error {
	if x.buf == nil {
		x.buf = make([]byte, copyBufSize)
	}
	if sparse(hdr) {
		// Its holes stay holes: a few bytes of sparse map must not make
		// this write out gigabytes of zeros.
		hw := &holeWriter{ctx: x.ctx, f: f}
		n, err := io.CopyBuffer(hw, tr, x.buf)
		if err == nil && n != hdr.Size {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			err = f.Truncate(hdr.Size)
		}
		return err
	}
	if x.src.fs == nil {
		// Hide the file's ReadFrom so the copy uses the large buffer.
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, tr, x.buf)
		if err == nil && n != hdr.Size {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	x.src.to, x.src.left = f, hdr.Size
	defer func() { x.src.to = nil }()
	var n int64
	for {
		// x.buf only gives the read its size; its bytes go to f.
		m, err := tr.Read(x.buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if moved := hdr.Size - x.src.left; n != hdr.Size || moved != hdr.Size {
		return fmt.Errorf("only %d of its %d bytes reached the file", moved, hdr.Size)
	}
	return nil
}

// holeWriter writes to f from its start, seeking over chunks that are all
// zeros so that they become holes, and stops when ctx is done (archive/tar
// makes the zeros of a hole as fast as they are asked for).
type holeWriter struct {
	ctx context.Context
	f   *os.File
	off int64
}

var zeros = make([]byte, copyBufSize)

func (h *holeWriter) Write(p []byte) (int, error) {
	if err := h.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) <= len(zeros) && bytes.Equal(p, zeros[:len(p)]) {
		h.off += int64(len(p))
		return len(p), nil
	}
	n, err := h.f.WriteAt(p, h.off)
	h.off += int64(n)
	return n, err
}

// sparse reports whether hdr is a PAX sparse file, whose contents
// archive/tar reassembles from pieces and holes: those cannot be diverted.
func sparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// copyBufSize matches the protocol's data frames.
const copyBufSize = 256 << 10

// cleanName turns a tar entry name into a clean relative path, refusing
// absolute names and ".." components.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", &EscapeError{Name: name, Reason: "empty name"}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", &EscapeError{Name: name, Reason: "name contains a NUL byte"}
	}
	if path.IsAbs(name) {
		return "", &EscapeError{Name: name, Reason: "absolute path"}
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return "", &EscapeError{Name: name, Reason: `".." component`}
	}
	return path.Clean(name), nil
}

// checkName refuses names that are too long or lie outside Options.Top.
func (x *extractor) checkName(raw, name string) error {
	if len(raw) > maxNameLen {
		return &EscapeError{Name: raw[:64] + "...", Reason: fmt.Sprintf("name longer than %d bytes", maxNameLen)}
	}
	if top := x.opts.Top; top != "" && name != top && !strings.HasPrefix(name, top+"/") {
		return &EscapeError{Name: raw, Reason: fmt.Sprintf("outside %q, the only name this copy may create", top)}
	}
	return nil
}

// checkParents makes sure every directory above name is a real directory
// inside the root (creating missing ones) and none is a symlink.
func (x *extractor) checkParents(name string) error {
	parent := path.Dir(name)
	if x.safe[parent] {
		return nil
	}
	if len(x.safe) > 1<<16 {
		clear(x.safe)
		x.safe["."] = true
	}
	parts := strings.Split(parent, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if x.safe[p] {
			continue
		}
		fi, err := x.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := x.mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return &EscapeError{Name: name, Reason: fmt.Sprintf("parent %q is a symlink", p)}
		case !fi.IsDir():
			return fmt.Errorf("tar entry %q: parent %q exists and is not a directory", name, p)
		case p == x.opts.Top && !x.opts.Replace && !x.madeTop:
			// Top did not exist when the extraction began: someone
			// else made it since.
			return &ExistsError{Name: p}
		}
		x.safe[p] = true
	}
	return nil
}

// mkdir creates the directory name and remembers that this extraction
// made it.
func (x *extractor) mkdir(name string, perm fs.FileMode) error {
	if err := x.root.Mkdir(name, perm); err != nil {
		return err
	}
	if name == x.opts.Top {
		x.madeTop = true
	}
	x.made[name] = -1
	x.dirBytes += len(name)
	if x.dirBytes > maxDirBytes {
		return fmt.Errorf("tar entry %q: the stream holds more directories than can be tracked (%d MiB of names); refusing the rest", name, maxDirBytes>>20)
	}
	return nil
}

// existing returns what is at name, nil when nothing is. Without
// Options.Replace, anything there is refused: it can only be an entry
// this extraction made already (Top did not exist before) or something it
// must not touch. A directory is never replaced by something else.
func (x *extractor) existing(name string) (fs.FileInfo, error) {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("tar entry %q: a directory of that name exists; refusing to replace it", name)
	}
	if !x.opts.Replace {
		return nil, &ExistsError{Name: name}
	}
	return fi, nil
}

// tempName returns an unused name next to name for a file to be renamed
// over it.
func tempName(name string) string {
	return path.Join(path.Dir(name), ".banger-tmp-"+rand.Text()[:16])
}

// place puts what create makes at name: directly when nothing is there
// (create fails if something appeared meanwhile, so nothing is replaced),
// or, with Options.Replace over an existing file or symlink, under a
// temporary name renamed over it, so the old one stays whole until the
// new one is complete.
func (x *extractor) place(name string, old fs.FileInfo, create func(at string) error) error {
	if old == nil {
		if err := create(name); err != nil {
			return err
		}
		x.madeTop = x.madeTop || name == x.opts.Top
		return nil
	}
	tmp := tempName(name)
	if err := create(tmp); err != nil {
		return err
	}
	if err := x.root.Rename(tmp, name); err != nil {
		_ = x.root.Remove(tmp)
		return err
	}
	return nil
}

// perm is the mode an entry gets, as opts allows.
func (x *extractor) perm(mode fs.FileMode) fs.FileMode {
	keep := fs.ModePerm | fs.ModeSticky
	if x.opts.KeepSetid {
		keep |= fs.ModeSetuid | fs.ModeSetgid
	}
	return mode & keep &^ (x.opts.Umask & fs.ModePerm)
}

func (x *extractor) entry(hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir && x.opts.Top == "" {
			return nil
		}
		return &EscapeError{Name: hdr.Name, Reason: "names the destination itself"}
	}
	if err := x.checkName(hdr.Name, name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		what := map[byte]string{tar.TypeChar: "character device", tar.TypeBlock: "block device", tar.TypeFifo: "FIFO"}[hdr.Typeflag]
		if x.opts.Skip == nil {
			return fmt.Errorf("tar entry %q: a %s; only files, directories, symlinks and hard links are copied", name, what)
		}
		x.opts.Skip(name, what)
		return nil
	}
	if err := x.checkParents(name); err != nil {
		return err
	}
	mode := hdr.FileInfo().Mode()
	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := x.root.Lstat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := x.mkdir(name, 0o700); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			if !x.opts.Replace {
				return &ExistsError{Name: name}
			}
			if err := x.root.Remove(name); err != nil {
				return err
			}
			if err := x.mkdir(name, 0o700); err != nil {
				return err
			}
		default:
			if _, ours := x.made[name]; !ours && !x.opts.Replace {
				return &ExistsError{Name: name}
			}
		}
		x.safe[name] = true
		a := dirAttrs{name: name, mode: mode, uid: hdr.Uid, gid: hdr.Gid, atime: hdr.AccessTime, mtime: hdr.ModTime}
		if i, ok := x.made[name]; ok && i >= 0 {
			x.dirs[i] = a // a later entry for the same directory wins
			return nil
		}
		x.made[name] = len(x.dirs)
		x.dirs = append(x.dirs, a)
		return nil
	case tar.TypeReg: // the reader already turns old TypeRegA entries into TypeReg
		old, err := x.existing(name)
		if err != nil {
			return err
		}
		err = x.place(name, old, func(at string) error { return x.file(at, hdr, tr, mode) })
		if err != nil {
			return fmt.Errorf("tar entry %q: %w", name, err)
		}
		return nil
	case tar.TypeSymlink:
		if len(hdr.Linkname) > maxNameLen {
			return &EscapeError{Name: hdr.Name, Reason: fmt.Sprintf("link target longer than %d bytes", maxNameLen)}
		}
		old, err := x.existing(name)
		if err != nil {
			return err
		}
		return x.place(name, old, func(at string) error {
			if err := x.root.Symlink(hdr.Linkname, at); err != nil {
				return err
			}
			if x.opts.Chown {
				return x.root.Lchown(at, hdr.Uid, hdr.Gid)
			}
			return nil
		})
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return &EscapeError{Name: hdr.Name, Reason: "hard link target " + err.(*EscapeError).Reason}
		}
		if err := x.checkName(hdr.Linkname, target); err != nil {
			return &EscapeError{Name: hdr.Name, Reason: "hard link target " + err.(*EscapeError).Reason}
		}
		if err := x.checkParents(target); err != nil {
			return err
		}
		fi, err := x.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("tar entry %q: hard link target %q: %w", name, target, err)
		}
		if !fi.Mode().IsRegular() {
			return &EscapeError{Name: hdr.Name, Reason: "hard link target is not a regular file"}
		}
		old, err := x.existing(name)
		if err != nil {
			return err
		}
		return x.place(name, old, func(at string) error { return x.root.Link(target, at) })
	default:
		return fmt.Errorf("tar entry %q: type %q is not supported; only files, directories, symlinks and hard links are", name, hdr.Typeflag)
	}
}

// file creates the regular file at (nothing may exist there), fills it
// with the entry's contents and sets its attributes. A file that could not
// be completed is removed: one that looks complete but is not is worse
// than none.
func (x *extractor) file(at string, hdr *tar.Header, tr *tar.Reader, mode fs.FileMode) error {
	f, err := x.root.OpenFile(at, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = x.copyInto(f, tr, hdr)
	if err == nil && x.opts.Chown {
		err = f.Chown(hdr.Uid, hdr.Gid)
	}
	if err == nil {
		// Chmod after chown: chown clears the setuid and setgid bits.
		err = f.Chmod(x.perm(mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = x.times(at, hdr.AccessTime, hdr.ModTime)
	}
	if err != nil {
		_ = x.root.Remove(at)
	}
	return err
}

func (x *extractor) times(name string, at, mt time.Time) error {
	if mt.IsZero() {
		return nil
	}
	if at.IsZero() {
		at = time.Now()
	}
	return x.root.Chtimes(name, at, mt)
}

// finishDirs applies directory attributes deepest first, so that making a
// parent read-only cannot block work on its children and setting a child's
// time does not disturb its parent's. Only directories this extraction
// made get them, or every directory of the stream with Options.Replace.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if x.opts.Chown {
			if err := x.root.Lchown(d.name, d.uid, d.gid); err != nil {
				return err
			}
		}
		if err := x.root.Chmod(d.name, x.perm(d.mode)); err != nil {
			return err
		}
		if err := x.times(d.name, d.atime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

// removeTop removes Options.Top, which this extraction made, after
// making the directories it made writable again.
func (x *extractor) removeTop() error {
	for name := range x.made {
		_ = x.root.Chmod(name, 0o700)
	}
	return x.root.RemoveAll(x.opts.Top)
}
