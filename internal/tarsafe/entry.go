package tarsafe

import (
	"archive/tar"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// cleanName turns a tar entry name into a clean relative path, refusing
// ".." components and, unless rooted, absolute names.
func cleanName(name string, rooted bool) (string, error) {
	if name == "" {
		return "", &EscapeError{Name: name, Reason: "empty name"}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", &EscapeError{Name: name, Reason: "name contains a NUL byte"}
	}
	if len(name) > maxNameLen {
		return "", &EscapeError{Name: name[:64] + "...", Reason: fmt.Sprintf("name longer than %d bytes", maxNameLen)}
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return "", &EscapeError{Name: name, Reason: `".." component`}
	}
	if path.IsAbs(name) {
		if !rooted {
			return "", &EscapeError{Name: name, Reason: "absolute path"}
		}
		name = "." + name
	}
	return path.Clean(name), nil
}

// checkTopName refuses a name outside Options.Top.
func (x *extractor) checkTopName(raw, name string) error {
	if top := x.opts.Top; top != "" && name != top && !strings.HasPrefix(name, top+"/") {
		return &EscapeError{Name: raw, Reason: fmt.Sprintf("outside %q, the only name this copy may create", top)}
	}
	return nil
}

// specialName names the device and FIFO types.
var specialName = map[byte]string{tar.TypeChar: "character device", tar.TypeBlock: "block device", tar.TypeFifo: "FIFO"}

func (x *extractor) entry(orig *tar.Header, tr *tar.Reader) error {
	if orig.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	hdr := orig
	if x.opts.Filter != nil {
		h, err := x.opts.Filter(orig)
		if err != nil {
			return err
		}
		if h == nil {
			return nil
		}
		hdr = h
	}
	raw := hdr.Name
	name, err := cleanName(raw, x.opts.RootedNames)
	if err != nil {
		return err
	}
	if err := x.checkTopName(raw, name); err != nil && name != "." {
		return err
	}
	if x.opts.Whiteouts {
		if done, err := x.whiteout(raw, name); done || err != nil {
			return err
		}
	}
	if name == "." {
		return x.topDir(raw, hdr, orig)
	}
	if what, ok := specialName[hdr.Typeflag]; ok && x.opts.Special != SpecialMake {
		if x.opts.Special == SpecialRefuse || x.opts.Skip == nil {
			return fmt.Errorf("tar entry %q: a %s; only files, directories, symlinks and hard links are taken", raw, what)
		}
		x.opts.Skip(name, what)
		return nil
	}
	if err := x.checkParents(raw, name); err != nil {
		return err
	}
	if x.layer != nil {
		x.mark(name, true)
	}
	if err := x.make(raw, name, hdr, tr); err != nil {
		return err
	}
	return x.placed(name, orig)
}

// topDir handles an entry naming the destination itself: only a
// directory may, and its attributes are applied only when the stream may
// replace what exists; a strict extraction skips it.
func (x *extractor) topDir(raw string, hdr, orig *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir || x.opts.Top != "" {
		return &EscapeError{Name: raw, Reason: "names the destination itself"}
	}
	if x.opts.Replace == ReplaceNothing {
		return nil
	}
	x.addDir(".", hdr)
	if x.opts.Xattrs {
		x.xattrs(".", hdr)
	}
	return x.placed(".", orig)
}

// make creates the entry hdr at name.
func (x *extractor) make(raw, name string, hdr *tar.Header, tr *tar.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(raw, name, hdr)
	case tar.TypeReg, tar.TypeGNUSparse: // the reader turns old TypeRegA entries into TypeReg
		if err := x.countFile(raw, hdr); err != nil {
			return err
		}
		return x.replace(raw, name, "", func(at string) error { return x.file(at, hdr, tr) })
	case tar.TypeSymlink:
		if err := x.checkSymlink(raw, name, hdr.Linkname); err != nil {
			return err
		}
		return x.replace(raw, name, "", func(at string) error { return x.symlink(at, hdr) })
	case tar.TypeLink:
		target, err := x.linkTarget(raw, hdr.Linkname)
		if err != nil {
			return err
		}
		return x.replace(raw, name, target, func(at string) error { return x.root.Link(target, at) })
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.replace(raw, name, "", func(at string) error { return x.special(at, hdr) })
	}
	return fmt.Errorf("tar entry %q: type %q is not supported; only files, directories, symlinks and hard links are", raw, hdr.Typeflag)
}

// placed tells Options.Placed about the entry now at name.
func (x *extractor) placed(name string, orig *tar.Header) error {
	if x.opts.Placed == nil {
		return nil
	}
	fi, err := x.root.Lstat(name)
	if err != nil {
		return fmt.Errorf("%s, just put in place: %w", name, err)
	}
	return x.opts.Placed(name, orig, fi)
}

// dir makes or merges the directory entry hdr at name; its attributes
// wait for finishDirs.
func (x *extractor) dir(raw, name string, hdr *tar.Header) error {
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.mkdir(name, 0o700); err != nil {
			return err
		}
	case err != nil:
		return err
	case !fi.IsDir():
		if x.opts.Replace == ReplaceNothing {
			return &ExistsError{Name: raw}
		}
		if err := x.root.Remove(name); err != nil {
			return fmt.Errorf("tar entry %q: replacing what was there: %w", raw, err)
		}
		if err := x.mkdir(name, 0o700); err != nil {
			return err
		}
	default:
		if _, ours := x.made[name]; !ours && x.opts.Replace == ReplaceNothing {
			return &ExistsError{Name: raw}
		}
	}
	x.safe[name] = true
	x.addDir(name, hdr)
	if x.opts.Xattrs {
		x.xattrs(name, hdr)
	}
	return nil
}

// addDir remembers the attributes of the directory name for finishDirs.
func (x *extractor) addDir(name string, hdr *tar.Header) {
	a := dirAttrs{name: name, mode: hdr.FileInfo().Mode(), uid: hdr.Uid, gid: hdr.Gid, atime: hdr.AccessTime, mtime: hdr.ModTime}
	if i, ok := x.made[name]; ok && i >= 0 {
		x.dirs[i] = a // a later entry for the same directory wins
		return
	}
	x.made[name] = len(x.dirs)
	x.dirs = append(x.dirs, a)
}

// checkSymlink refuses a symlink target that is too long, empty or, with
// Options.ContainSymlinks, leaves the destination.
func (x *extractor) checkSymlink(raw, name, target string) error {
	if len(target) > maxNameLen {
		return &EscapeError{Name: raw, Reason: fmt.Sprintf("link target longer than %d bytes", maxNameLen)}
	}
	if target == "" {
		return fmt.Errorf("tar entry %q: a symlink with an empty target", raw)
	}
	if x.opts.ContainSymlinks {
		resolved := path.Join(path.Dir(name), target)
		if path.IsAbs(target) || resolved == ".." || strings.HasPrefix(resolved, "../") {
			return &EscapeError{Name: raw, Reason: fmt.Sprintf("its link target %q leaves the destination", target)}
		}
		if innerDotDot(target) {
			// "s/../x" is inside by its letters, but the kernel
			// follows s first: if s is a link (now or later), s/..
			// is wherever s leads's parent.
			return &EscapeError{Name: raw, Reason: fmt.Sprintf("its link target %q has a \"..\" after a name, which may climb out through another link", target)}
		}
	}
	return nil
}

// innerDotDot reports whether target has a ".." component after another
// one. Leading ".." components climb from the link's own directory, whose
// ancestors are real directories; after a name, ".." climbs from wherever
// that name leads, which the letters of the target do not say.
func innerDotDot(target string) bool {
	named := false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return true
			}
		default:
			named = true
		}
	}
	return false
}

// linkTarget checks a hard link's target and returns its clean name: it
// must lie inside the destination (and Top), be reached through real
// directories only, exist, and be a regular file (with SpecialMake, any
// entry but a directory).
func (x *extractor) linkTarget(raw, linkname string) (string, error) {
	if x.opts.Filter != nil {
		h, err := x.opts.Filter(&tar.Header{Typeflag: tar.TypeReg, Name: linkname})
		if err != nil {
			return "", err
		}
		if h == nil {
			return "", &EscapeError{Name: raw, Reason: fmt.Sprintf("hard link target %q is not among the entries taken", linkname)}
		}
		linkname = h.Name
	}
	target, err := cleanName(linkname, x.opts.RootedNames)
	if err != nil {
		return "", &EscapeError{Name: raw, Reason: "hard link target " + err.(*EscapeError).Reason}
	}
	if target == "." {
		return "", &EscapeError{Name: raw, Reason: "hard link target is the destination itself"}
	}
	if err := x.checkTopName(linkname, target); err != nil {
		return "", &EscapeError{Name: raw, Reason: "hard link target " + err.(*EscapeError).Reason}
	}
	if _, err := x.dirChain(raw, path.Dir(target), false); err != nil {
		return "", err
	}
	fi, err := x.root.Lstat(target)
	if err != nil {
		return "", fmt.Errorf("tar entry %q: hard link target %q: %w", raw, linkname, err)
	}
	if fi.IsDir() || (!fi.Mode().IsRegular() && x.opts.Special != SpecialMake) {
		return "", &EscapeError{Name: raw, Reason: "hard link target is not a regular file"}
	}
	return target, nil
}

// perm is the mode an entry gets, as opts allows.
func (x *extractor) perm(mode fs.FileMode) fs.FileMode {
	keep := fs.ModePerm | fs.ModeSticky
	if x.opts.KeepSetid {
		keep |= fs.ModeSetuid | fs.ModeSetgid
	}
	return mode & keep &^ (x.opts.Umask & fs.ModePerm)
}

// file creates the regular file at (nothing may exist there), fills it
// with the entry's contents and sets its attributes. A file that could not
// be completed is removed: one that looks complete but is not is worse
// than none.
func (x *extractor) file(at string, hdr *tar.Header, tr *tar.Reader) error {
	f, err := x.root.OpenFile(at, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = x.copyInto(f, tr, hdr)
	if err == nil && x.opts.Owners {
		err = f.Chown(hdr.Uid, hdr.Gid)
	}
	if err == nil {
		// Chmod after chown: chown clears the setuid and setgid bits.
		err = f.Chmod(x.perm(hdr.FileInfo().Mode()))
	}
	if err == nil && x.opts.Xattrs {
		x.xattrs(at, hdr)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = x.times(at, hdr, false)
	}
	if err != nil {
		_ = x.root.Remove(at)
	}
	return err
}

// symlink creates the symlink hdr at at.
func (x *extractor) symlink(at string, hdr *tar.Header) error {
	if err := x.root.Symlink(hdr.Linkname, at); err != nil {
		return err
	}
	if x.opts.Owners {
		if err := x.root.Lchown(at, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if x.opts.Xattrs {
		x.xattrs(at, hdr)
	}
	return x.times(at, hdr, true)
}

// special makes the device or FIFO hdr at at, with its owner and exact
// mode (mknod is subject to the umask and ignores the setid bits).
func (x *extractor) special(at string, hdr *tar.Header) error {
	if err := x.mknod(at, hdr); err != nil {
		return err
	}
	if x.opts.Owners {
		if err := x.root.Lchown(at, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := x.root.Chmod(at, x.perm(hdr.FileInfo().Mode())); err != nil {
		return err
	}
	if x.opts.Xattrs {
		x.xattrs(at, hdr)
	}
	return x.times(at, hdr, true)
}
