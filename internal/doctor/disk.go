package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/hostprobe"

	"github.com/dustin/go-humanize"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

type spaceProbe struct {
	dir, at string // the state dir, and the directory measured
	free    uint64
	fs      string
	err     error
	notDir  bool // err: the state dir cannot be a directory
}

func probeSpace(dir string) spaceProbe {
	p := spaceProbe{dir: dir, at: hostprobe.ExistingDir(dir)}
	if err := hostprobe.NotADirectory(dir); err != nil {
		p.err, p.notDir = err, true
		return p
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.at, &st); err != nil {
		p.err = fmt.Errorf("statfs %s: %w", p.at, err)
		return p
	}
	p.free = st.Bavail * uint64(st.Bsize)
	p.fs = hostprobe.FSName(int64(st.Type))
	return p
}

func (p spaceProbe) where() string {
	if p.at == filepath.Clean(p.dir) {
		return p.dir
	}
	return fmt.Sprintf("%s (not made yet; measured at %s)", p.dir, p.at)
}

func checkStateDir(p spaceProbe) Result {
	if p.notDir {
		return fail("state-dir", "set state_dir to a directory (or a path where one can be made), or move the file away",
			"state_dir: %v: bangerd cannot keep its store, images and VMs there", p.err)
	}
	if p.err != nil {
		return warn("state-dir", "check that state_dir is a readable directory", "cannot measure the free space of %s: %v", p.dir, p.err)
	}
	if p.free < LowDiskSpace {
		return warn("state-dir", "free space on that filesystem, or set state_dir to a directory on a larger disk",
			"%s: only %s free on %s; images and VM disks need several GiB (%s or more is comfortable)",
			p.where(), humanize.IBytes(p.free), p.fs, humanize.IBytes(LowDiskSpace))
	}
	return ok("state-dir", "%s: %s free on %s", p.where(), humanize.IBytes(p.free), p.fs)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func checkReflink(p hostprobe.Reflink) Result {
	switch {
	case p.Err != nil:
		return warn("reflink", "make state_dir a writable directory of yours, then re-run `banger doctor`", "cannot tell whether %s supports reflink clones: %v", p.At, p.Err)
	case p.Supported:
		return ok("reflink", "%s (%s) supports reflink clones: VM disks are made instantly and share blocks with their image", p.At, p.FS)
	}
	return warn("reflink", "for instant VM disks, set state_dir to a directory on btrfs or XFS (made with reflink support); copies work without it",
		"%s (%s) does not support reflink clones: each VM disk is a sparse copy of its image (slower, uses more space)", p.At, p.FS)
}

// checkCOW says how `vm create` will make root disks, by the daemon's rules
// (hostprobe.ChooseCOW) and in its words.
func checkCOW(want string, f hostprobe.Facts) Result {
	kind, reason, err := hostprobe.ChooseCOW(want, f)
	switch {
	case err != nil && want == hostprobe.COWDMSnap:
		return fail("cow", `load device-mapper (sudo modprobe dm_snapshot), and run bangerd as root or through the banger helper, or set cow = "auto"`, "%v", err)
	case err != nil && want == hostprobe.COWReflink:
		return fail("cow", `set cow = "auto" (or "copy"), or set state_dir to a directory on btrfs or XFS`, "%v", err)
	case err != nil:
		return fail("cow", `set cow = "auto"`, "%v", err)
	case kind == hostprobe.COWReflink && want == hostprobe.COWReflink && f.Reflink.Err != nil:
		return warn("cow", `set cow = "auto" to fall back to copies`, "%s", reason)
	}
	return ok("cow", "%s", reason)
}

// checkSSHKey looks at the key VMs are reached with; the daemon makes one
// when there is none.
func checkSSHKey(path string) Result {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return warn("ssh-key", "nothing to do: banger makes an ed25519 key there on the first `vm start`; or set ssh_key_path to a key of yours",
			"no key at %s yet: it is made on first vm start", path)
	case err != nil:
		return fail("ssh-key", "make the key readable by you, or set ssh_key_path to another key", "cannot read %s: %v", path, unwrapPath(err))
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return fail("ssh-key", "point ssh_key_path at an unencrypted private key, or remove the file to let banger make one",
			"%s is not a usable private key: %v", path, err)
	}
	return ok("ssh-key", "%s is a %s key", path, signer.PublicKey().Type())
}
