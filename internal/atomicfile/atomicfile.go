package atomicfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Option changes how a file is written.
type Option func(*options)

type options struct {
	mode     fs.FileMode
	uid, gid int
	noSync   bool
}

// Mode sets the file's permission bits (default 0600), and os.ModeSetuid,
// os.ModeSetgid and os.ModeSticky when given. They are set with fchmod
// after any chown, so neither the umask nor the chown narrows them.
func Mode(m fs.FileMode) Option { return func(o *options) { o.mode = m } }

// Owner sets the file's owner and group; -1 leaves either as the writer's.
// Changing them to others than the writer's needs root (CAP_CHOWN).
func Owner(uid, gid int) Option { return func(o *options) { o.uid, o.gid = uid, gid } }

// NoSync skips the fsync of the file and of its directory (see the package
// doc for when that is right).
func NoSync() Option { return func(o *options) { o.noSync = true } }

// File is a temporary file that Commit renames over its target. Write to it,
// or let another program write to Name; then call Commit, and defer Cleanup
// so that a failure on the way removes it.
type File struct {
	f      *os.File
	dir    *os.File
	path   string // the target
	tmp    string // the temporary file's base name in dir
	o      options
	closed bool // f closed
	done   bool // committed or cleaned up
}

// maxTries bounds the attempts to find a free temporary name.
const maxTries = 100

// Create makes the temporary file for path in path's directory, with the
// mode and owner of opts. Nothing is visible at path until Commit.
func Create(path string, opts ...Option) (*File, error) {
	o := options{mode: 0o600, uid: -1, gid: -1}
	for _, opt := range opts {
		opt(&o)
	}
	base := filepath.Base(path)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, fmt.Errorf("replace %s: not a file name", path)
	}
	dirPath := filepath.Dir(path)
	dirFlags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if o.noSync {
		dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC // no read access needed
	}
	dfd, err := unix.Open(dirPath, dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("replace %s: open its directory: %w", path, &os.PathError{Op: "open", Path: dirPath, Err: err})
	}
	return create(os.NewFile(uintptr(dfd), dirPath), path, o)
}

// CreateIn is Create for name inside root: name's directory is opened
// through root, so a link on the way can lead only inside it, and a link
// at name is replaced, never followed. For trees that are not the
// writer's own, such as an image being built.
func CreateIn(root *os.Root, name string, opts ...Option) (*File, error) {
	o := options{mode: 0o600, uid: -1, gid: -1}
	for _, opt := range opts {
		opt(&o)
	}
	path := filepath.Join(root.Name(), name)
	base := filepath.Base(name)
	if base == "." || base == ".." || base == string(filepath.Separator) {
		return nil, fmt.Errorf("replace %s: not a file name", path)
	}
	dir, err := root.Open(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("replace %s: open its directory: %w", path, err)
	}
	if fi, err := dir.Stat(); err != nil || !fi.IsDir() {
		dir.Close()
		return nil, fmt.Errorf("replace %s: its directory is not one", path)
	}
	return create(dir, path, o)
}

// create makes the temporary file for path in dir, which it then owns.
func create(dir *os.File, path string, o options) (*File, error) {
	dirPath, base := filepath.Dir(path), filepath.Base(path)
	f, tmp, err := createTemp(int(dir.Fd()), dirPath, base)
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("replace %s: create a temporary file beside it: %w", path, err)
	}
	af := &File{f: f, dir: dir, path: path, tmp: tmp, o: o}
	if err := af.setAttrs(); err != nil {
		af.Cleanup()
		return nil, fmt.Errorf("replace %s: %w", path, err)
	}
	return af, nil
}

// tempName draws a temporary name for base; tests replace it to force
// collisions.
var tempName = func(base string) string { return "." + base + ".tmp-" + rand.Text()[:12] }

func createTemp(dfd int, dirPath, base string) (*os.File, string, error) {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var err error
	for range maxTries {
		name := tempName(base)
		var fd int
		fd, err = unix.Openat(dfd, name, flags, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(dirPath, name)), name, nil
		}
		if !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return nil, "", &os.PathError{Op: "create", Path: filepath.Join(dirPath, "."+base+".tmp-*"), Err: err}
}

// setAttrs gives the temporary file its owner, then its mode: chown
// clears the set-user-ID and set-group-ID bits, even as root.
func (af *File) setAttrs() error {
	if af.o.uid != -1 || af.o.gid != -1 {
		if err := af.f.Chown(af.o.uid, af.o.gid); err != nil {
			return err
		}
	}
	return af.f.Chmod(af.o.mode)
}

// Name is the temporary file's path, for a program that writes it by name.
func (af *File) Name() string { return af.f.Name() }

// Write writes to the temporary file.
func (af *File) Write(p []byte) (int, error) { return af.f.Write(p) }

// ReadFrom copies r into the temporary file (io.Copy uses it).
func (af *File) ReadFrom(r io.Reader) (int64, error) { return af.f.ReadFrom(r) }

// Truncate sets the temporary file's size.
func (af *File) Truncate(size int64) error { return af.f.Truncate(size) }

// Commit flushes the temporary file (unless NoSync), renames it over the
// target and flushes the directory (unless NoSync). On failure the
// temporary file is removed and the target is as it was, except when only
// the directory's flush failed: the new file is then in place but the
// rename may not survive a crash.
func (af *File) Commit() error {
	if af.done {
		return fmt.Errorf("replace %s: already committed or cleaned up", af.path)
	}
	err := af.commit()
	if err != nil {
		af.Cleanup()
		return fmt.Errorf("replace %s: %w", af.path, err)
	}
	return nil
}

func (af *File) commit() error {
	if !af.o.noSync {
		if err := af.f.Sync(); err != nil {
			return err
		}
	}
	af.closed = true
	if err := af.f.Close(); err != nil {
		return err
	}
	dfd := int(af.dir.Fd())
	if err := unix.Renameat(dfd, af.tmp, dfd, filepath.Base(af.path)); err != nil {
		return &os.LinkError{Op: "rename", Old: af.f.Name(), New: af.path, Err: err}
	}
	af.done = true
	defer af.dir.Close()
	if af.o.noSync {
		return nil
	}
	if err := af.dir.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		// EINVAL: the file system cannot flush directories at all.
		return fmt.Errorf("the new file is in place, but its directory could not be flushed: %w", err)
	}
	return nil
}

// Cleanup closes and removes the temporary file unless Commit renamed it;
// after Commit it does nothing. Defer it right after Create.
func (af *File) Cleanup() {
	if af.done {
		return
	}
	af.done = true
	if !af.closed {
		af.closed = true
		_ = af.f.Close()
	}
	_ = unix.Unlinkat(int(af.dir.Fd()), af.tmp, 0)
	_ = af.dir.Close()
}

// WriteFile replaces path with data.
func WriteFile(path string, data []byte, opts ...Option) error {
	af, err := Create(path, opts...)
	if err != nil {
		return err
	}
	defer af.Cleanup()
	if _, err := af.Write(data); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return af.Commit()
}

// WriteFileIn replaces name inside root with data; see CreateIn.
func WriteFileIn(root *os.Root, name string, data []byte, opts ...Option) error {
	af, err := CreateIn(root, name, opts...)
	if err != nil {
		return err
	}
	defer af.Cleanup()
	if _, err := af.Write(data); err != nil {
		return fmt.Errorf("replace %s: %w", af.path, err)
	}
	return af.Commit()
}

// WriteFrom replaces path with what r yields until EOF and returns the
// number of bytes written. An error from r leaves path as it was.
func WriteFrom(path string, r io.Reader, opts ...Option) (int64, error) {
	af, err := Create(path, opts...)
	if err != nil {
		return 0, err
	}
	defer af.Cleanup()
	n, err := io.Copy(af, r)
	if err != nil {
		return n, fmt.Errorf("replace %s: %w", path, err)
	}
	return n, af.Commit()
}
