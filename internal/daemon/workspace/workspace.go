package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Copy-on-write strategies.
const (
	Auto    = "auto"
	DMSnap  = "dmsnap"
	Reflink = "reflink"
	Copy    = "copy"
)

// Manager owns <state_dir>/vms.
type Manager struct {
	root string

	mu      sync.Mutex
	closed  bool           // after Close, deletions run in the caller
	deletes sync.WaitGroup // background deletions of removed VM directories
}

// trashPrefix names a removed VM's directory while it is being deleted.
const trashPrefix = ".trash-"

// OrphanPrefix names a VM directory that the store had no row for, moved
// aside (never deleted) by MoveAside: .orphaned-<id>-<UTC time>.
const OrphanPrefix = ".orphaned-"

// New returns a manager of VM directories under stateDir/vms.
func New(stateDir string) *Manager { return &Manager{root: filepath.Join(stateDir, "vms")} }

// Dir is the directory of the VM with the given id.
func (m *Manager) Dir(id string) string { return filepath.Join(m.root, id) }

// uncommittedMarker is a file in a VM directory from Create until Commit:
// while it is there, the VM has no row in the store, so a directory that
// has it and no row is a create cut short, provably garbage.
const uncommittedMarker = ".uncommitted"

// Create makes the VM's directory (0700), marked as uncommitted until
// Commit. It fails if it already exists, so two VMs never share one.
func (m *Manager) Create(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/.") {
		return "", fmt.Errorf("VM id %q cannot name a directory", id)
	}
	if err := os.MkdirAll(m.root, 0o700); err != nil {
		return "", err
	}
	// The directory is made, with its mark, under a trash name and then
	// renamed into place: a daemon killed in between leaves trash, which
	// Sweep deletes, never a directory without the mark, which would be
	// kept as a VM the store forgot.
	dir := m.Dir(id)
	tmp := filepath.Join(m.root, trashPrefix+id+".new")
	_ = os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("create VM directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(tmp, uncommittedMarker), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("create VM directory %s: %w", dir, err)
	}
	return dir, nil
}

// Commit marks the VM's directory as owned by a row in the store: call it
// once the row is recorded. From then on the directory is never deleted
// unless its VM is removed (see MoveAside).
func (m *Manager) Commit(id string) error {
	if id == "" || strings.ContainsAny(id, "/.") {
		return fmt.Errorf("VM id %q cannot name a directory", id)
	}
	err := os.Remove(filepath.Join(m.Dir(id), uncommittedMarker))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mark the directory of VM %s as recorded: %w", id, err)
	}
	return nil
}

// Uncommitted reports whether the VM's directory was made by Create and
// never committed: a create cut short before its row was recorded.
func (m *Manager) Uncommitted(id string) bool {
	if id == "" || strings.ContainsAny(id, "/.") {
		return false
	}
	fi, err := os.Lstat(filepath.Join(m.Dir(id), uncommittedMarker))
	return err == nil && fi.Mode().IsRegular()
}

// Remove deletes the VM's directory and everything in it. The directory
// leaves its path at once (one rename to a trash name beside it) and its
// contents are deleted in the background, since unlinking a large disk file
// takes a while; Close waits for those deletions, and Sweep finishes what a
// crash left in the trash. When the rename fails, the directory is deleted
// in place before Remove returns. Removing a VM that has no directory is not
// an error.
func (m *Manager) Remove(id string) error {
	if id == "" || strings.ContainsAny(id, "/.") {
		return fmt.Errorf("VM id %q cannot name a directory", id)
	}
	dir := m.Dir(id)
	trash := filepath.Join(m.root, trashPrefix+id)
	err := os.Rename(dir, trash)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return os.RemoveAll(dir)
	}
	m.deleteLater(trash)
	return nil
}

// deleteLater deletes path in the background, or at once once the manager
// is closed. What a crash leaves is swept at the next start.
func (m *Manager) deleteLater(path string) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = os.RemoveAll(path)
		return
	}
	m.deletes.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.deletes.Done()
		_ = os.RemoveAll(path)
	}()
}

// Close waits, until ctx ends, for the background deletions; removals after
// it delete in place. What is still being deleted when ctx ends is left to
// the next start's Sweep.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.deletes.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("deleting the directories of removed VMs: %w (the rest is deleted at the next start)", ctx.Err())
	}
}

// Sweep deletes, in the background, the trash that removals cut short by a
// crash left behind.
func (m *Manager) Sweep() error {
	ents, err := os.ReadDir(m.root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			m.deleteLater(filepath.Join(m.root, e.Name()))
		}
	}
	return nil
}

// MoveAside renames the VM's directory to <vms>/.orphaned-<id>-<UTC time>
// and returns the new path. It is for a directory the store has no row for:
// the daemon cannot prove it is garbage (the store may have been emptied or
// restored from an older backup), so it keeps it out of the way and never
// deletes it. List skips it; Sweep leaves it alone.
func (m *Manager) MoveAside(id string, now time.Time) (string, error) {
	if id == "" || strings.ContainsAny(id, "/.") {
		return "", fmt.Errorf("VM id %q cannot name a directory", id)
	}
	to := filepath.Join(m.root, OrphanPrefix+id+"-"+now.UTC().Format("20060102T150405Z"))
	if _, err := os.Lstat(to); err == nil {
		return "", fmt.Errorf("move %s aside: %s already exists", m.Dir(id), to)
	}
	if err := os.Rename(m.Dir(id), to); err != nil {
		return "", fmt.Errorf("move %s aside: %w", m.Dir(id), err)
	}
	return to, nil
}

// Orphans returns the VM directories moved aside by MoveAside.
func (m *Manager) Orphans() ([]string, error) {
	return Orphans(filepath.Dir(m.root))
}

// Orphans returns the VM directories of stateDir that were moved aside
// because the store had no row for them, oldest name first.
func Orphans(stateDir string) ([]string, error) {
	root := filepath.Join(stateDir, "vms")
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), OrphanPrefix) {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out, nil
}

// List returns the ids of the VM directories that exist (not the trash of
// removed ones), so the daemon can find leftovers of VMs it has no row for.
func (m *Manager) List() ([]string, error) {
	ents, err := os.ReadDir(m.root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// ErrReflinkUnsupported means the filesystem cannot clone extents.
var ErrReflinkUnsupported = errors.New("the filesystem does not support reflink clones")

// CloneOptions adjust CloneDisk.
type CloneOptions struct {
	// Size grows the disk to this many bytes when it is larger than the
	// source (the guest grows its filesystem at boot).
	Size int64
	// NoSync leaves a copied disk's data to the kernel's writeback instead
	// of flushing it before CloneDisk returns. For a disk that a VMM opens
	// right away: the guest's first flush (ext4 commits every few seconds),
	// which the VMM passes on as an fdatasync of the file, makes the whole
	// copy durable with it.
	NoSync bool
}

// CloneDisk makes dst, a writable copy of src, with the given strategy
// ("auto" tries reflink, then copy), then grows it to o.Size. A copied disk
// is flushed to stable storage unless o.NoSync. dst must not exist; on
// failure or cancellation it is removed. It returns the strategy used.
func CloneDisk(ctx context.Context, src, dst, strategy string, o CloneOptions) (string, error) {
	used, err := cloneDisk(ctx, src, dst, strategy, !o.NoSync)
	if err != nil {
		return "", err
	}
	if size := o.Size; size > 0 {
		fi, err := os.Stat(dst)
		if err != nil {
			os.Remove(dst)
			return "", err
		}
		if size > fi.Size() {
			if err := os.Truncate(dst, size); err != nil {
				os.Remove(dst)
				return "", fmt.Errorf("grow %s to %d bytes: %w", dst, size, err)
			}
		}
	}
	return used, nil
}

func cloneDisk(ctx context.Context, src, dst, strategy string, flush bool) (string, error) {
	switch strategy {
	case Reflink:
		return Reflink, reflink(src, dst)
	case Copy:
		return Copy, sparseCopy(ctx, src, dst, flush)
	case Auto, "":
		err := reflink(src, dst)
		if err == nil {
			return Reflink, nil
		}
		if !errors.Is(err, ErrReflinkUnsupported) {
			return "", err
		}
		return Copy, sparseCopy(ctx, src, dst, flush)
	case DMSnap:
		return "", errors.New("dmsnap disks are made by the dmsnap package, not by a file clone")
	}
	return "", fmt.Errorf("unknown copy-on-write strategy %q: use auto, dmsnap, reflink or copy", strategy)
}

// reflink clones src into a new dst with FICLONE: instant, and blocks are
// shared until written.
func reflink(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	cerr := out.Close()
	if err != nil {
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("clone %s: %w (%v)", src, ErrReflinkUnsupported, err)
		}
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	if cerr != nil {
		os.Remove(dst)
		return cerr
	}
	return nil
}

// sparseCopy copies only the data extents of src (found with SEEK_DATA and
// SEEK_HOLE), so a mostly empty filesystem image copies in a fraction of its
// size and stays sparse.
func sparseCopy(ctx context.Context, src, dst string, flush bool) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		cerr := out.Close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	inFd := int(in.Fd())
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("find data in %s: %w", src, err)
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find hole in %s: %w", src, err)
		}
		if err := copyRange(ctx, in, out, data, hole-data); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		off = hole
	}
	if !flush {
		return nil
	}
	return out.Sync()
}

// copyRange copies n bytes at off, in the kernel with copy_file_range where
// it can, else through a buffer; chunks keep cancellation prompt.
func copyRange(ctx context.Context, in, out *os.File, off, n int64) error {
	const chunk = 64 << 20
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(n, chunk)
		roff, woff := off, off
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(want), 0)
		if err != nil || c == 0 {
			// Fall back to a plain copy for this chunk.
			if _, err := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, want)); err != nil {
				return err
			}
			c = int(want)
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}
