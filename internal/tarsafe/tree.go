package tarsafe

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// checkParents makes sure every directory above name is a real directory
// inside the root (creating missing ones) and none is a symlink.
func (x *extractor) checkParents(raw, name string) error {
	_, err := x.dirChain(raw, path.Dir(name), true)
	return err
}

// dirChain checks that dir and every directory above it is a real
// directory inside the root, not a symlink. A missing one is created with
// create; without, dirChain reports false.
func (x *extractor) dirChain(raw, dir string, create bool) (bool, error) {
	if x.safe[dir] {
		return true, nil
	}
	if len(x.safe) > 1<<16 {
		clear(x.safe)
		x.safe["."] = true
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if x.safe[p] {
			continue
		}
		fi, err := x.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := x.mkdir(p, 0o755); err != nil {
				return false, fmt.Errorf("tar entry %q: creating its parent %q: %w", raw, p, err)
			}
			if err := x.placed(p, nil); err != nil {
				return false, err
			}
		case errors.Is(err, fs.ErrNotExist):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("tar entry %q: %w", raw, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return false, &EscapeError{Name: raw, Reason: fmt.Sprintf("parent %q is a symlink", p)}
		case !fi.IsDir():
			return false, fmt.Errorf("tar entry %q: parent %q exists and is not a directory", raw, p)
		case p == x.opts.Top && x.opts.Replace == ReplaceNothing && !x.madeTop:
			// Top did not exist when the extraction began: someone
			// else made it since.
			return false, &ExistsError{Name: p}
		}
		x.safe[p] = true
	}
	return true, nil
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
	if x.layer != nil {
		if _, ok := x.layer[name]; !ok {
			x.mark(name, false)
		}
	}
	x.made[name] = -1
	x.dirBytes += len(name)
	if x.dirBytes > maxDirBytes {
		return fmt.Errorf("tar entry %q: the stream holds more directories than can be tracked (%d MiB of names); refusing the rest", name, maxDirBytes>>20)
	}
	return nil
}

// replace puts what create makes at name, replacing what is there as
// Options.Replace allows. target is a hard link's target: linking a name
// to the file it already is changes nothing.
func (x *extractor) replace(raw, name, target string, create func(at string) error) error {
	old, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("tar entry %q: %w", raw, err)
	case old.IsDir() && x.opts.Replace != ReplaceAll:
		return fmt.Errorf("tar entry %q: a directory of that name exists; refusing to replace it", raw)
	case x.opts.Replace == ReplaceNothing:
		return &ExistsError{Name: raw}
	case old.IsDir():
		if err := x.remove(name); err != nil {
			return fmt.Errorf("tar entry %q: replacing the directory there: %w", raw, err)
		}
		old = nil
	case target != "":
		if fi, err := x.root.Lstat(target); err == nil && os.SameFile(old, fi) {
			return nil
		}
	}
	if err := x.place(name, old, create); err != nil {
		return fmt.Errorf("tar entry %q: %w", raw, err)
	}
	return nil
}

// maxSafeScan is the largest cache of known directories that a removal
// scans for names under what it removes; a larger one is emptied.
const maxSafeScan = 4096

// tempName returns an unused name next to name for a file to be renamed
// over it.
func tempName(name string) string {
	return path.Join(path.Dir(name), ".banger-tmp-"+rand.Text()[:16])
}

// place puts what create makes at name: directly when nothing is there
// (create fails if something appeared meanwhile, so nothing is replaced),
// or over an existing non-directory under a temporary name renamed over
// it, so the old one stays whole until the new one is complete.
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

// remove removes name, with everything under it, and forgets what was
// known about directories there.
func (x *extractor) remove(name string) error {
	if len(x.safe) > maxSafeScan {
		// Scanning a large cache on every removal would make a stream of
		// many directories and many whiteouts cost their product.
		clear(x.safe)
		x.safe["."] = true
	}
	for d := range x.safe {
		if d == name || strings.HasPrefix(d, name+"/") {
			delete(x.safe, d)
		}
	}
	x.closeAt()
	return x.root.RemoveAll(name)
}

// finishDirs applies directory attributes deepest first, so that making a
// parent read-only cannot block work on its children and setting a child's
// time does not disturb its parent's. Only directories this extraction
// made get them, or every directory of the stream when it may replace; a
// directory a later entry replaced or removed is left alone.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if fi, err := x.root.Lstat(d.name); err != nil || !fi.IsDir() {
			continue
		}
		if x.opts.Owners {
			if err := x.root.Lchown(d.name, d.uid, d.gid); err != nil {
				return fmt.Errorf("setting the owner of %s: %w", d.name, err)
			}
		}
		if err := x.root.Chmod(d.name, x.perm(d.mode)); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", d.name, err)
		}
		if err := x.setTimes(d.name, d.atime, d.mtime, false); err != nil {
			return fmt.Errorf("setting the times of %s: %w", d.name, err)
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

// whiteout names of the OCI image layout.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// whiteout applies name if it is a whiteout, and reports whether it was.
func (x *extractor) whiteout(raw, name string) (bool, error) {
	base, dir := path.Base(name), path.Dir(name)
	switch {
	case !strings.HasPrefix(base, whiteoutPrefix):
		return false, nil
	case base == opaqueMarker:
		return true, x.opaque(raw, dir)
	case strings.HasPrefix(base, whiteoutMeta):
		return true, nil // other aufs metadata: not part of the tree
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return true, &EscapeError{Name: raw, Reason: "whiteout names no file"}
	}
	victim := path.Join(dir, target)
	ok, err := x.dirChain(raw, dir, false)
	if err != nil || !ok {
		return true, err // nothing below to hide
	}
	if _, err := x.root.Lstat(victim); errors.Is(err, fs.ErrNotExist) {
		return true, nil
	} else if err != nil {
		return true, fmt.Errorf("tar entry %q: %w", raw, err)
	}
	if err := x.remove(victim); err != nil {
		return true, fmt.Errorf("tar entry %q: removing %s: %w", raw, victim, err)
	}
	return true, nil
}

// opaque hides what was under dir before this stream, keeping what the
// stream put there.
func (x *extractor) opaque(raw, dir string) error {
	if _, err := x.dirChain(raw, dir, true); err != nil {
		return err
	}
	if dir != "." {
		if _, ok := x.layer[dir]; !ok {
			x.mark(dir, false)
		}
	}
	if err := x.clearLower(dir); err != nil {
		return fmt.Errorf("tar entry %q: %w", raw, err)
	}
	return nil
}

// clearLower removes what is under dir and not of this stream. A
// directory it has cleared is remembered (in x.opaqued): from then on it
// holds only what the stream put there, so clearing it, or anything
// under it, again has nothing to do, and a stream of many opaque
// whiteouts costs each directory one read rather than one per whiteout.
func (x *extractor) clearLower(dir string) error {
	for d := dir; ; d = path.Dir(d) {
		if x.opaqued[d] {
			return nil
		}
		if d == "." {
			break
		}
	}
	return x.clearDir(dir)
}

func (x *extractor) clearDir(dir string) error {
	if x.opaqued[dir] {
		return nil
	}
	f, err := x.root.Open(dir)
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		child := path.Join(dir, e.Name())
		_, inLayer := x.layer[child]
		switch {
		case !inLayer:
			if err := x.remove(child); err != nil {
				return err
			}
		case e.IsDir():
			if err := x.clearDir(child); err != nil {
				return err
			}
		}
	}
	if x.opaqued == nil {
		x.opaqued = map[string]bool{}
	}
	x.opaqued[dir] = true
	return nil
}

// mark records name as put in place by this stream (entry) or as an
// ancestor of such a name, and its ancestors as ancestors.
func (x *extractor) mark(name string, entry bool) {
	x.layer[name] = entry
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if _, ok := x.layer[d]; ok {
			break
		}
		x.layer[d] = false
	}
}
