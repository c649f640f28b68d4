package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every device-mapper device banger makes; List
// reports only these, and Create and Remove refuse other names.
const Prefix = "banger-"

// ChunkSectors is the snapshot's exception chunk size in 512-byte sectors
// (4 KiB).
const ChunkSectors = 8

// MinCOWSize is the smallest COW file Create will make.
const MinCOWSize = 1 << 20

// ErrUnavailable is wrapped by errors saying this host cannot make
// device-mapper snapshots.
var ErrUnavailable = errors.New("device-mapper snapshots are not available on this host")

// procMisc lists the kernel's misc devices ("236 device-mapper").
var procMisc = "/proc/misc"

// mapperDir is where device nodes of dm devices live.
var mapperDir = "/dev/mapper"

// Snapshot is a live device-mapper snapshot and the loop devices under it.
type Snapshot struct {
	Name       string // dm name, Prefix + ...
	Device     string // /dev/mapper/Name
	Sectors    uint64 // size in 512-byte sectors (the origin's size)
	Origin     string // the origin's backing file (as the kernel reports it)
	OriginLoop string // /dev/loopN holding the origin read-only
	COWLoop    string // /dev/loopM holding the COW file
	COWFile    string // the COW file (as the kernel reports it)
}

// Manager makes and removes snapshots. The zero value works and serialises
// only within this process.
type Manager struct {
	// LockDir holds LockFile, flocked around every loop and
	// device-mapper change so that other processes sharing the directory
	// take turns too. Empty: the process-wide lock alone.
	LockDir string
}

// ValidName checks that name can be a banger snapshot name: Prefix, then
// letters, digits, '.', '_', '+' or '-', at most 127 bytes in all.
func ValidName(name string) error {
	if !strings.HasPrefix(name, Prefix) || len(name) == len(Prefix) {
		return fmt.Errorf("snapshot name %q must start with %q and go on after it", name, Prefix)
	}
	if len(name) > dmNameLen-1 {
		return fmt.Errorf("snapshot name %q is longer than %d bytes", name, dmNameLen-1)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-", r)
		if !ok {
			return fmt.Errorf("snapshot name %q has %q; use letters, digits, '.', '_', '+' or '-'", name, r)
		}
	}
	return nil
}

// Available returns nil when this host can make snapshots: loop devices,
// /dev/mapper/control, and a snapshot target that is loaded or loadable.
// Otherwise the error (wrapping ErrUnavailable) says what is missing.
func Available() error {
	if _, err := os.Stat(loopControl); err != nil {
		return fmt.Errorf("%w: no loop devices (%s: %v); load the loop module (modprobe loop)", ErrUnavailable, loopControl, err)
	}
	c, err := openControlOrExplain()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.version(); err != nil {
		return fmt.Errorf("%w: device-mapper is not usable on this host (version ioctl on %s: %v): %s", ErrUnavailable, dmControlPath, err, dmFix)
	}
	ok, err := c.hasTarget("snapshot")
	if err != nil {
		return fmt.Errorf("%w: ask device-mapper for the snapshot target: %v", ErrUnavailable, err)
	}
	if !ok {
		return fmt.Errorf("%w: device-mapper has no snapshot target; load it with modprobe dm_snapshot", ErrUnavailable)
	}
	return nil
}

// openControlOrExplain opens the control node; when that fails the error
// says whether the kernel has device-mapper at all.
func openControlOrExplain() (*dmControl, error) {
	c, err := openControl()
	if err == nil {
		return c, nil
	}
	switch {
	case errors.Is(err, unix.ENOENT) && !kernelHasDM():
		return nil, fmt.Errorf("%w: no device-mapper: %s does not exist and the kernel lists no device-mapper in %s; load it with modprobe dm_mod (the module may not exist in this kernel)", ErrUnavailable, dmControlPath, procMisc)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%w: the kernel has device-mapper but %s is missing; create it with dmsetup mknodes", ErrUnavailable, dmControlPath)
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return nil, fmt.Errorf("%w: %v; device-mapper needs root (CAP_SYS_ADMIN)", ErrUnavailable, err)
	}
	return nil, fmt.Errorf("%w: device-mapper is not usable on this host (%v): %s", ErrUnavailable, err, dmFix)
}

// dmFix is what to do when the control node exists but device-mapper
// does not answer through it (a node left without its driver, say).
const dmFix = `load the device-mapper modules (modprobe dm_mod dm_snapshot), or set cow = "copy" (or "auto") in the config`

// kernelHasDM reports whether /proc/misc lists device-mapper.
func kernelHasDM() bool {
	b, err := os.ReadFile(procMisc)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == "device-mapper" {
			return true
		}
	}
	return false
}

// Create makes the snapshot name: origin attached read-only to one loop
// device, cowFile (created sparse at cowSize when missing; an existing file
// is reused with its contents, which is how a VM keeps its disk) to another,
// joined by "snapshot <origin> <cow> P 8" over the origin's whole size, with
// its node at /dev/mapper/name. On failure everything made so far is undone:
// the dm device removed, the loop devices detached, a COW file it created
// deleted.
func (m *Manager) Create(ctx context.Context, name, origin, cowFile string, cowSize int64) (_ Snapshot, err error) {
	cowExists, err := checkCreate(name, origin, cowFile, cowSize)
	if err != nil {
		return Snapshot{}, err
	}

	unlock, err := m.lock(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	defer unlock()

	c, err := openControlOrExplain()
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer c.Close()
	if _, err := c.status(name); err == nil {
		return Snapshot{}, fmt.Errorf("snapshot %s already exists; remove it first", name)
	} else if !errors.Is(err, unix.ENXIO) {
		return Snapshot{}, fmt.Errorf("snapshot %s: device-mapper status: %w", name, err)
	}

	var undo undoStack
	defer func() {
		if err != nil {
			undo.unwind()
		}
	}()
	if !cowExists {
		if err := makeSparse(cowFile, cowSize); err != nil {
			return Snapshot{}, fmt.Errorf("snapshot %s: %w", name, err)
		}
		undo.push(func() { os.Remove(cowFile) })
	}
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}

	ol, cl, sectors, err := attachLoops(ctx, &undo, name, origin, cowFile)
	if err != nil {
		return Snapshot{}, err
	}
	node, err := activate(c, &undo, name, ol, cl, sectors, cowFile)
	if err != nil {
		return Snapshot{}, err
	}
	// The snapshot holds both loop devices now; autoclear detaches them
	// when it goes.
	ol.release()
	cl.release()
	return Snapshot{
		Name:       name,
		Device:     node,
		Sectors:    sectors,
		Origin:     origin,
		OriginLoop: ol.Path,
		COWLoop:    cl.Path,
		COWFile:    cowFile,
	}, nil
}

// undoStack holds what Create must undo when a later step fails, in the
// order it was made.
type undoStack []func()

// push adds the undo of a step that succeeded.
func (u *undoStack) push(f func()) { *u = append(*u, f) }

// unwind runs the undos, the last made first.
func (u undoStack) unwind() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// checkCreate checks Create's arguments before anything is locked or
// made: a valid name, an origin that is a file or block device, and a COW
// file that is either a regular file (reused; cowExists is true) or
// missing with cowSize at least MinCOWSize.
func checkCreate(name, origin, cowFile string, cowSize int64) (cowExists bool, err error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	ost, err := os.Stat(origin)
	if err != nil {
		return false, fmt.Errorf("snapshot %s: origin: %w", name, err)
	}
	if !ost.Mode().IsRegular() && ost.Mode()&os.ModeDevice == 0 {
		return false, fmt.Errorf("snapshot %s: origin %s is not a file or block device", name, origin)
	}
	if cst, err := os.Stat(cowFile); err == nil {
		if !cst.Mode().IsRegular() {
			return false, fmt.Errorf("snapshot %s: COW file %s exists and is not a regular file", name, cowFile)
		}
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("snapshot %s: COW file: %w", name, err)
	} else if cowSize < MinCOWSize {
		return false, fmt.Errorf("snapshot %s: COW size %d is below the minimum %d bytes", name, cowSize, MinCOWSize)
	}
	return false, nil
}

// attachLoops attaches origin read-only and cowFile read-write to loop
// devices (pushing their detach onto undo) and returns the origin's size
// in sectors, which must not be zero.
func attachLoops(ctx context.Context, undo *undoStack, name, origin, cowFile string) (*loopDev, *loopDev, uint64, error) {
	// Locals, not named results: the undos must keep the devices when a
	// failing return sets the results to nil.
	ol, err := attachLoop(origin, true)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("snapshot %s: origin: %w", name, err)
	}
	undo.push(func() { ol.detach() })
	cl, err := attachLoop(cowFile, false)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("snapshot %s: COW file: %w", name, err)
	}
	undo.push(func() { cl.detach() })
	sectors, err := ol.sectors()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if sectors == 0 {
		return nil, nil, 0, fmt.Errorf("snapshot %s: origin %s is empty", name, origin)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, 0, err
	}
	return ol, cl, sectors, nil
}

// activate creates the device-mapper device name, loads the snapshot table
// over the two loop devices, resumes it and makes its node, pushing each
// undo onto undo. It returns the node's path.
func activate(c *dmControl, undo *undoStack, name string, ol, cl *loopDev, sectors uint64, cowFile string) (string, error) {
	dev, err := c.create(name)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: create the device-mapper device: %w", name, err)
	}
	undo.push(func() { removeRetry(context.Background(), c, name) })
	params := fmt.Sprintf("%d:%d %d:%d P %d",
		unix.Major(ol.Dev), unix.Minor(ol.Dev), unix.Major(cl.Dev), unix.Minor(cl.Dev), ChunkSectors)
	if err := c.load(name, []target{{Length: sectors, Type: "snapshot", Params: params}}, false); err != nil {
		return "", fmt.Errorf("snapshot %s: load the table \"snapshot %s\" (is the COW file %s large enough and not damaged? is dm_snapshot loaded?): %w", name, params, cowFile, err)
	}
	if err := c.resume(name); err != nil {
		return "", fmt.Errorf("snapshot %s: activate: %w", name, err)
	}
	node, made, err := makeNode(name, dev)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", name, err)
	}
	if made {
		undo.push(func() { removeNode(node, dev) })
	}
	return node, nil
}

// makeSparse creates path (which must not exist) as a sparse file of size
// bytes.
func makeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create the COW file: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("size the COW file %s to %d bytes: %w", path, size, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("create the COW file %s: %w", path, err)
	}
	return nil
}

// makeNode makes /dev/mapper/name for dev unless a node for it is there
// already (udev, devtmpfs). made says whether this call made it.
func makeNode(name string, dev uint64) (string, bool, error) {
	node := filepath.Join(mapperDir, name)
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev {
			return node, false, nil
		}
		if err := os.Remove(node); err != nil {
			return "", false, fmt.Errorf("replace the stale node %s: %w", node, err)
		}
	}
	if err := os.MkdirAll(mapperDir, 0o755); err != nil {
		return "", false, fmt.Errorf("create %s: %w", mapperDir, err)
	}
	tmp := filepath.Join(mapperDir, "."+name+".tmp")
	os.Remove(tmp)
	if err := unix.Mknod(tmp, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return "", false, fmt.Errorf("make the device node %s (%d:%d): %w", node, unix.Major(dev), unix.Minor(dev), err)
	}
	if err := os.Rename(tmp, node); err != nil {
		os.Remove(tmp)
		return "", false, fmt.Errorf("make the device node %s: %w", node, err)
	}
	return node, true, nil
}

// removeNode removes /dev/mapper/NAME if it is still the node (or udev's
// symlink) of dev.
func removeNode(node string, dev uint64) {
	var st unix.Stat_t
	if err := unix.Lstat(node, &st); err != nil {
		return
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		if st.Rdev == dev {
			os.Remove(node)
		}
	case unix.S_IFLNK:
		if t, err := os.Readlink(node); err == nil && filepath.Base(t) == "dm-"+strconv.Itoa(int(unix.Minor(dev))) {
			os.Remove(node)
		}
	}
}

// removeWait bounds the EBUSY retries of a dm remove.
const (
	removeTries = 50
	removePause = 100 * time.Millisecond
)

// removeRetry removes the dm device, retrying briefly while it is busy (a
// short-lived opener such as udev or blkid).
func removeRetry(ctx context.Context, c *dmControl, name string) error {
	var err error
	for i := 0; i < removeTries; i++ {
		err = c.remove(name)
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		t := time.NewTimer(removePause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		}
	}
	return err
}

// Remove removes the snapshot name and detaches its loop devices. The COW
// file is left in place. A snapshot that does not exist is not an error.
func (m *Manager) Remove(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := openControlOrExplain()
	if err != nil {
		if errors.Is(err, ErrUnavailable) && !kernelHasDM() {
			return nil // no device-mapper: nothing of ours can exist
		}
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	defer c.Close()
	h, err := c.status(name)
	if errors.Is(err, unix.ENXIO) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove snapshot %s: device-mapper status: %w", name, err)
	}
	// Note the loop devices (and their backing files' identity) before
	// they go, so as to detach only those.
	type held struct {
		maj, min uint32
		info     loopInfo
	}
	var loops []held
	if ts, err := c.table(name); err == nil {
		for _, mm := range snapshotDevices(ts) {
			if li, err := loopByNumber(mm[0], mm[1]); err == nil {
				loops = append(loops, held{mm[0], mm[1], li})
			}
		}
	}
	if err := removeRetry(ctx, c, name); err != nil {
		if errors.Is(err, unix.EBUSY) {
			if st, serr := c.status(name); serr == nil {
				h = st
			}
			return fmt.Errorf("remove snapshot %s: it is in use (open count %d); stop whatever has %s open and try again: %w", name, h.OpenCount, filepath.Join(mapperDir, name), err)
		}
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	removeNode(filepath.Join(mapperDir, name), h.Dev)
	var errs []error
	for _, l := range loops {
		if err := detachIfSame(l.maj, l.min, l.info); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("snapshot %s removed, but: %w", name, errors.Join(errs...))
	}
	return nil
}

// snapshotDevices returns the major:minor pairs (origin, then COW) of a
// snapshot table.
func snapshotDevices(ts []target) [][2]uint32 {
	var out [][2]uint32
	for _, t := range ts {
		if t.Type != "snapshot" {
			continue
		}
		f := strings.Fields(t.Params)
		for _, s := range f[:min(2, len(f))] {
			if maj, mn, err := parseMajorMinor(s); err == nil {
				out = append(out, [2]uint32{maj, mn})
			}
		}
	}
	return out
}

// List returns the banger-named device-mapper devices, with the loop
// devices and files under each snapshot — after a crash, the leftovers to
// Remove. A host without device-mapper has none.
func List() ([]Snapshot, error) {
	c, err := openControlOrExplain()
	if err != nil {
		if errors.Is(err, ErrUnavailable) && !kernelHasDM() {
			return nil, nil
		}
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer c.Close()
	devs, err := c.list()
	if err != nil {
		return nil, fmt.Errorf("list device-mapper devices: %w", err)
	}
	var out []Snapshot
	for _, d := range devs {
		if !strings.HasPrefix(d.Name, Prefix) {
			continue
		}
		s := Snapshot{Name: d.Name, Device: filepath.Join(mapperDir, d.Name)}
		ts, err := c.table(d.Name)
		if err == nil {
			for _, t := range ts {
				s.Sectors += t.Length
			}
			for i, mm := range snapshotDevices(ts) {
				li, err := loopByNumber(mm[0], mm[1])
				if err != nil {
					continue
				}
				if i == 0 {
					s.OriginLoop, s.Origin = li.Path, li.Backing
				} else {
					s.COWLoop, s.COWFile = li.Path, li.Backing
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}
