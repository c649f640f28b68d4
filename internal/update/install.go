package update

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Binaries are the executables an update replaces, in the order it
// replaces them: the CLI that drives the update goes last.
var Binaries = []string{"banger-vsock-agent", "bangerd", "banger"}

// PrevSuffix names the copy of a binary an update keeps: bangerd.prev.
const PrevSuffix = ".prev"

// Install is an installed banger: one directory holding the three binaries.
type Install struct {
	Dir string // absolute, symlinks resolved
}

// Path is where binary name lives in the install.
func (in *Install) Path(name string) string { return filepath.Join(in.Dir, name) }

// Prev is where the previous version of binary name is kept.
func (in *Install) Prev(name string) string { return in.Path(name) + PrevSuffix }

// RefusedError is a reason not to update an install; nothing was changed.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason + "; nothing was changed" }

func refused(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// Locate finds the install of the executable exe (os.Executable()): the
// directory it is in, which must hold banger, bangerd and
// banger-vsock-agent as regular files that this process can replace. It
// refuses a build in a source checkout (build/bin of a tree with go.mod).
func Locate(exe string) (*Install, error) {
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return nil, fmt.Errorf("find the running banger (%s): %w", exe, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(real)
	if root, ok := sourceCheckout(dir); ok {
		return nil, refused("banger runs from a source checkout (%s): rebuild it there with `make build` (or `git pull && make build`); `banger update` only updates an installed banger", root)
	}
	in := &Install{Dir: dir}
	for _, name := range Binaries {
		p := in.Path(name)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, refused("%s is missing: an install keeps banger, bangerd and banger-vsock-agent in one directory (%s); reinstall with install.sh", p, dir)
		case err != nil:
			return nil, fmt.Errorf("inspect %s: %w", p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return nil, refused("%s is a symbolic link: update the install it points to, by running the banger there", p)
		case !fi.Mode().IsRegular():
			return nil, refused("%s is not a regular file: an install keeps banger, bangerd and banger-vsock-agent as files in one directory; reinstall with install.sh", p)
		}
	}
	if err := writable(dir); err != nil {
		return nil, err
	}
	return in, nil
}

// sourceCheckout reports whether dir is build/bin of a tree with a go.mod.
func sourceCheckout(dir string) (string, bool) {
	if filepath.Base(dir) != "bin" || filepath.Base(filepath.Dir(dir)) != "build" {
		return "", false
	}
	root := filepath.Dir(filepath.Dir(dir))
	_, err := os.Stat(filepath.Join(root, "go.mod"))
	return root, err == nil
}

// writable refuses unless this process may create files in dir (the .prev
// copies, the staging directory, the renames) and replace each binary.
func writable(dir string) error {
	paths := []string{dir}
	for _, name := range Binaries {
		paths = append(paths, filepath.Join(dir, name))
	}
	for _, p := range paths {
		err := access(p, 2) // W_OK
		if err == nil {
			continue
		}
		if errors.Is(err, syscall.EROFS) {
			return refused("%s is on a read-only filesystem: remount it read-write, or update the image it is built into", p)
		}
		owner := ownerOf(p)
		if os.Geteuid() != 0 {
			also := ""
			if owner != "root" {
				also = " or as " + owner
			}
			return refused("cannot write %s (owned by %s): run the update as root (`sudo %s update`)%s", p, owner, filepath.Join(dir, "banger"), also)
		}
		return refused("cannot write %s (owned by %s) even as root (%v): check its attributes (`lsattr`) and how its filesystem is mounted", p, owner, err)
	}
	return nil
}

// access is syscall.Access; tests replace it to play a user without
// write access (they run as root).
var access = syscall.Access

// ownerOf names the owner of path, or its uid.
func ownerOf(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "unknown"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	uid := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return "uid " + uid
}
