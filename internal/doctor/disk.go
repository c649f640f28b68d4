package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dustin/go-humanize"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// fsNames names the filesystems a state dir is likely to be on.
var fsNames = map[int64]string{
	0xEF53:     "ext4",
	0x9123683E: "btrfs",
	0x58465342: "xfs",
	0x01021994: "tmpfs",
	0x794c7630: "overlayfs",
	0x2fc12fc1: "zfs",
	0xF2F52010: "f2fs",
	0xca451a4e: "bcachefs",
	0x6969:     "nfs",
	0xFF534D42: "cifs",
	0x65735546: "fuse",
}

func fsName(t int64) string {
	if n, ok := fsNames[t]; ok {
		return n
	}
	return fmt.Sprintf("filesystem type %#x", t)
}

// existingDir returns dir, or its nearest ancestor that exists when dir
// does not exist yet (a fresh install).
func existingDir(dir string) string {
	d := filepath.Clean(dir)
	for {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return d
		}
		d = parent
	}
}

type spaceProbe struct {
	dir, at string // the state dir, and the directory measured
	free    uint64
	fs      string
	err     error
}

func probeSpace(dir string) spaceProbe {
	p := spaceProbe{dir: dir, at: existingDir(dir)}
	var st unix.Statfs_t
	if err := unix.Statfs(p.at, &st); err != nil {
		p.err = fmt.Errorf("statfs %s: %w", p.at, err)
		return p
	}
	p.free = st.Bavail * uint64(st.Bsize)
	p.fs = fsName(int64(st.Type))
	return p
}

func (p spaceProbe) where() string {
	if p.at == filepath.Clean(p.dir) {
		return p.dir
	}
	return fmt.Sprintf("%s (not made yet; measured at %s)", p.dir, p.at)
}

func checkStateDir(p spaceProbe) Result {
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

type reflinkProbe struct {
	at        string // the directory tested
	fs        string
	supported bool
	err       error // the test itself could not be done
}

// probeReflink tries a FICLONE between two small temporary files in the
// state dir (or its nearest existing ancestor) and removes them.
func probeReflink(dir string) reflinkProbe {
	p := reflinkProbe{at: existingDir(dir)}
	var st unix.Statfs_t
	if err := unix.Statfs(p.at, &st); err == nil {
		p.fs = fsName(int64(st.Type))
	} else {
		p.fs = "unknown filesystem"
	}
	src, err := os.CreateTemp(p.at, ".banger-doctor-*")
	if err != nil {
		p.err = fmt.Errorf("make a test file in %s: %w", p.at, unwrapPath(err))
		return p
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		p.err = fmt.Errorf("write a test file in %s: %w", p.at, err)
		return p
	}
	dst, err := os.CreateTemp(p.at, ".banger-doctor-*")
	if err != nil {
		p.err = fmt.Errorf("make a test file in %s: %w", p.at, unwrapPath(err))
		return p
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	err = unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	switch {
	case err == nil:
		p.supported = true
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL),
		errors.Is(err, unix.ENOTTY), errors.Is(err, unix.ENOSYS):
	default:
		p.err = fmt.Errorf("FICLONE in %s: %w", p.at, err)
	}
	return p
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func checkReflink(p reflinkProbe) Result {
	switch {
	case p.err != nil:
		return warn("reflink", "make state_dir a writable directory of yours, then re-run `banger doctor`", "cannot tell whether %s supports reflink clones: %v", p.at, p.err)
	case p.supported:
		return ok("reflink", "%s (%s) supports reflink clones: VM disks are made instantly and share blocks with their image", p.at, p.fs)
	}
	return warn("reflink", "for instant VM disks, set state_dir to a directory on btrfs or XFS (made with reflink support); copies work without it",
		"%s (%s) does not support reflink clones: each VM disk is a sparse copy of its image (slower, uses more space)", p.at, p.fs)
}

// checkCOW says how `vm create` will make root disks, by the daemon's rules:
// auto is a dm snapshot where device-mapper is usable (dm), else reflink
// where the state dir supports it, else copy.
func checkCOW(want string, rl reflinkProbe, dm bool) Result {
	switch want {
	case "copy":
		return ok("cow", "cow = copy: each VM disk is a sparse copy of its image")
	case "dmsnap":
		if dm {
			return ok("cow", "cow = dmsnap: each VM disk is a device-mapper snapshot of its image")
		}
		return fail("cow", `load device-mapper (sudo modprobe dm_snapshot), and run bangerd as root or through the banger helper, or set cow = "auto"`,
			"cow = dmsnap, but device-mapper is not usable here, so `vm create` refuses it")
	case "reflink":
		switch {
		case rl.supported:
			return ok("cow", "cow = reflink: %s (%s) supports it", rl.at, rl.fs)
		case rl.err != nil:
			return warn("cow", `set cow = "auto" to fall back to copies`, "cow = reflink, and whether %s supports it cannot be told: %v", rl.at, rl.err)
		}
		return fail("cow", `set cow = "auto" (or "copy"), or set state_dir to a directory on btrfs or XFS`,
			"cow = reflink, but %s (%s) does not support reflink clones, so `vm create` fails", rl.at, rl.fs)
	}
	switch {
	case dm:
		return ok("cow", "auto picks dmsnap: device-mapper and loop devices are usable")
	case rl.supported:
		return ok("cow", "auto picks reflink: %s (%s) supports clones", rl.at, rl.fs)
	case rl.err != nil:
		return ok("cow", "auto tries reflink and falls back to copy (reflink could not be tested: %v)", rl.err)
	}
	return ok("cow", "auto picks copy: no usable device-mapper, and %s (%s) does not support reflink clones", rl.at, rl.fs)
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
