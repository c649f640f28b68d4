package imagemgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"banger/internal/procwatch"

	"golang.org/x/sys/unix"
)

// WorkDirName is the directory under the state dir where every long piece
// of work (kernel import, bundle fetch, image build, OCI pull) builds its
// result before renaming it into kernels/ or images/. Whatever is in it
// when a daemon starts was left by one that died: SweepLeftovers removes it.
const WorkDirName = "tmp"

// killWait bounds how long the sweep waits for a killed process to go.
const killWait = 5 * time.Second

// workKinds are the kinds of work dirs workDir makes; the sweep removes
// only entries of tmp/ named <kind>-<digits>, so that a file a user put
// there, or a tmp/ that is a symlink to a shared directory such as /tmp,
// loses nothing that is not banger's.
var workKinds = []string{"apt", "bundle", "kernel-import", "build", "oci-pull"}

// isWorkName reports whether name is one workDir makes (MkdirTemp's
// random part is decimal digits).
func isWorkName(name string) bool {
	for _, k := range workKinds {
		if rest, ok := strings.CutPrefix(name, k+"-"); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// workDir makes <state_dir>/tmp/<kind>-<random> for one piece of work and
// marks it in progress, so that a sweep leaves it alone. done removes it.
func (m *Manager) workDir(kind string) (dir string, done func(), err error) {
	if !slices.Contains(workKinds, kind) {
		return "", nil, fmt.Errorf("work dir kind %q is not one the sweep knows", kind)
	}
	root := filepath.Join(m.root, WorkDirName)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", nil, fmt.Errorf("create the work dir %s: %w", root, err)
	}
	dir, err = os.MkdirTemp(root, kind+"-")
	if err != nil {
		return "", nil, fmt.Errorf("create a work dir in %s: %w", root, err)
	}
	untrack := m.track(dir)
	return dir, func() { removeTree(dir); untrack() }, nil
}

// track marks path as work of this daemon in progress until the returned
// function is called.
func (m *Manager) track(path string) func() {
	m.activeMu.Lock()
	defer m.activeMu.Unlock()
	if m.active == nil {
		m.active = map[string]int{}
	}
	m.active[path]++
	return func() {
		m.activeMu.Lock()
		defer m.activeMu.Unlock()
		if m.active[path]--; m.active[path] <= 0 {
			delete(m.active, path)
		}
	}
}

func (m *Manager) inProgress(path string) bool {
	m.activeMu.Lock()
	defer m.activeMu.Unlock()
	return m.active[path] > 0
}

// SweepReport says what SweepLeftovers found and did.
type SweepReport struct {
	Removed []string // leftover directories and files removed
	Killed  []int    // pids of leftover processes killed
}

// SweepLeftovers removes what operations interrupted by a dead daemon
// left: kernels and images renamed into place but never recorded (still
// marked uncommitted, see place), the work dirs in <state_dir>/tmp (names
// workDir makes; nothing else there is touched), and the
// temporary names older
// versions used beside kernels and images (".tmp-*", ".old-*", ".build-*",
// ".pull-*", ".<id>.tmp-*", "<id>.promote", and "<id>.lock" files no fetch
// holds). Processes still running whose command line or working directory
// names one of those paths (a mkfs.ext4 or apt-get of the dead daemon) are
// killed first. Work this manager has in progress is left alone, and
// nothing else under the state dir is touched. Call it at start, before
// the daemon takes requests; errors are collected, not fatal.
func (m *Manager) SweepLeftovers(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	var errs []error
	if err := m.sweepUncommitted(ctx, &rep); err != nil {
		errs = append(errs, err)
	}
	cands := m.leftovers(&errs)
	if len(cands) == 0 {
		return rep, errors.Join(errs...)
	}
	// A process whose command line or working directory names one of
	// the paths (a mkfs.ext4 or apt-get of the dead daemon) goes first.
	killed, err := procwatch.Kill(ctx, func(p procwatch.Proc) bool { return usesAny(p, cands) }, killWait)
	rep.Killed = killed
	if err != nil {
		errs = append(errs, fmt.Errorf("kill leftover processes: %w", err))
	}
	for _, c := range cands {
		if strings.HasSuffix(c, ".lock") {
			if err := removeFreeLock(c); err != nil {
				if !errors.Is(err, errLockHeld) {
					errs = append(errs, err)
				}
				continue
			}
		} else {
			removeTree(c)
		}
		if _, err := os.Lstat(c); err == nil {
			errs = append(errs, fmt.Errorf("remove leftover %s: it is still there (remove it by hand)", c))
			continue
		}
		rep.Removed = append(rep.Removed, c)
	}
	return rep, errors.Join(errs...)
}

// leftovers lists the sweep's candidates.
func (m *Manager) leftovers(errs *[]error) []string {
	var out []string
	add := func(dir string, match func(string) bool) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				*errs = append(*errs, fmt.Errorf("look for leftovers in %s: %w", dir, err))
			}
			return
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if match(e.Name()) && !m.inProgress(p) {
				out = append(out, p)
			}
		}
	}
	add(filepath.Join(m.root, WorkDirName), isWorkName)
	add(filepath.Join(m.root, "kernels"), legacyTemp)
	add(filepath.Join(m.root, "images"), legacyTemp)
	return out
}

// legacyTemp matches the temporary names, beside kernels and images, of
// work that older versions did there rather than in tmp/.
func legacyTemp(name string) bool {
	for _, p := range []string{".tmp-", ".old-", ".build-", ".pull-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
		return true // kernelprep's .<id>.tmp-*
	}
	if id, ok := strings.CutSuffix(name, ".promote"); ok && isID(id) {
		return true
	}
	if id, ok := strings.CutSuffix(name, ".lock"); ok && isID(id) {
		return true // bundle.Fetch's lock file
	}
	return false
}

// isID reports whether s looks like a managed artefact's id (newID).
func isID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

var errLockHeld = errors.New("lock held")

// removeFreeLock removes a fetch's lock file unless a fetch holds it.
func removeFreeLock(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("open leftover lock file %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errLockHeld
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove leftover lock file %s: %w", path, err)
	}
	return nil
}

// usesAny reports whether p's command line names one of paths (or
// something under one), or its working directory is one of them or under
// one.
func usesAny(p procwatch.Proc, paths []string) bool {
	names := func(s string) bool {
		for _, p := range paths {
			if i := strings.Index(s, p); i >= 0 {
				rest := s[i+len(p):]
				if rest == "" || rest[0] == '/' || rest[0] == ',' || rest[0] == ':' {
					return true
				}
			}
		}
		return false
	}
	args, err := p.Cmdline()
	if err != nil {
		return false
	}
	for _, arg := range args {
		if arg != "" && names(arg) {
			return true
		}
	}
	cwd, err := p.Cwd()
	return err == nil && names(cwd)
}

// removeTree removes dir and everything in it, making directories writable
// first when a plain removal fails (an unpacked tree may hold read-only
// directories when bangerd is not root).
func removeTree(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}
