package tarx

import (
	"archive/tar"
	"context"
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

// Options tune Extract.
type Options struct {
	// Chown applies each entry's uid and gid. Only root can do this; pass
	// os.Geteuid() == 0.
	Chown bool
}

// EscapeError reports a tar entry that would be written outside the
// destination directory: an absolute name, a ".." component, or a path that
// passes through a symlink.
type EscapeError struct {
	Name   string
	Reason string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("refusing tar entry %q: %s", e.Name, e.Reason)
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

// Extract unpacks the tar stream r into the existing directory dir. Regular
// files, directories, symlinks and hard links are created with the modes and
// modification times of their entries; existing files of the same name are
// replaced, existing directories are kept. Entries that would escape dir are
// refused with *EscapeError, and nothing is ever written outside dir: all
// writes go through an os.Root. Directory modes are applied at the end so a
// read-only directory can still be filled. A regular file whose contents
// could not be written in full is removed. If r is a FileSource, the
// contents of regular files go to the files with its ReadToFile.
func Extract(ctx context.Context, r io.Reader, dir string, opts Options) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	defer root.Close()
	src := &divertReader{r: r}
	src.fs, _ = r.(FileSource)
	x := &extractor{root: root, opts: opts, safe: map[string]bool{".": true}, src: src}
	tr := tar.NewReader(src)
	for {
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
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extract into %s: %w", dir, err)
		}
	}
	if err := x.finishDirs(); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	return nil
}

type extractor struct {
	root *os.Root
	opts Options
	// safe holds directories known to be real directories (not symlinks)
	// inside the root.
	safe map[string]bool
	dirs []*tar.Header
	buf  []byte // file copies, in chunks the size of a data frame
	src  *divertReader
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
	if x.src.fs == nil || sparse(hdr) {
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

// checkParents makes sure every directory above name is a real directory
// inside the root (creating missing ones) and none is a symlink.
func (x *extractor) checkParents(name string) error {
	parent := path.Dir(name)
	if x.safe[parent] {
		return nil
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
			if err := x.root.Mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return &EscapeError{Name: name, Reason: fmt.Sprintf("parent %q is a symlink", p)}
		case !fi.IsDir():
			return fmt.Errorf("tar entry %q: parent %q exists and is not a directory", name, p)
		}
		x.safe[p] = true
	}
	return nil
}

// clear removes a non-directory at name so it can be replaced.
func (x *extractor) clear(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("tar entry %q: a directory of that name exists; refusing to replace it with a file", name)
	}
	return x.root.Remove(name)
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
		if hdr.Typeflag == tar.TypeDir {
			return nil
		}
		return &EscapeError{Name: hdr.Name, Reason: "names the destination itself"}
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
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			if err := x.root.Remove(name); err != nil {
				return err
			}
			if err := x.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		}
		x.safe[name] = true
		x.dirs = append(x.dirs, hdr)
		return nil
	case tar.TypeReg: // the reader already turns old TypeRegA entries into TypeReg
		if err := x.clear(name); err != nil {
			return err
		}
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		err = x.copyInto(f, tr, hdr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// A file that looks complete but is not is worse than none.
			_ = x.root.Remove(name)
			return fmt.Errorf("tar entry %q: %w", name, err)
		}
		return x.attrs(name, hdr, mode)
	case tar.TypeSymlink:
		if err := x.clear(name); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		if x.opts.Chown {
			return x.root.Lchown(name, hdr.Uid, hdr.Gid)
		}
		return nil
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return &EscapeError{Name: hdr.Name, Reason: "hard link target " + err.(*EscapeError).Reason}
		}
		fi, err := x.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("tar entry %q: hard link target %q: %w", name, target, err)
		}
		if !fi.Mode().IsRegular() {
			return &EscapeError{Name: hdr.Name, Reason: "hard link target is not a regular file"}
		}
		if err := x.checkParents(target); err != nil {
			return err
		}
		if err := x.clear(name); err != nil {
			return err
		}
		return x.root.Link(target, name)
	default:
		return fmt.Errorf("tar entry %q: type %q is not supported; only files, directories, symlinks and hard links are", name, hdr.Typeflag)
	}
}

func (x *extractor) attrs(name string, hdr *tar.Header, mode fs.FileMode) error {
	if x.opts.Chown {
		if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	// Chmod after chown: chown clears the setuid and setgid bits.
	if err := x.root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	if !hdr.ModTime.IsZero() {
		at := hdr.AccessTime
		if at.IsZero() {
			at = time.Now()
		}
		return x.root.Chtimes(name, at, hdr.ModTime)
	}
	return nil
}

// finishDirs applies directory attributes deepest first, so that making a
// parent read-only cannot block work on its children and setting a child's
// time does not disturb its parent's.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		hdr := x.dirs[i]
		name, _ := cleanName(hdr.Name)
		if err := x.attrs(name, hdr, hdr.FileInfo().Mode()); err != nil {
			return err
		}
	}
	return nil
}
