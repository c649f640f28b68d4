package daemon

import (
	"os"
	"path/filepath"
	"strconv"

	"banger/internal/daemon/fcproc"
)

// jailBaseName is the directory under the state dir that holds the
// chroots of jailed Firecrackers: on the disks' filesystem, so that the
// jail can hard-link them.
const jailBaseName = "jail"

// fcJail decides whether a Firecracker VM runs under the jailer, and says
// why in words for the VMM reason. It needs a root bangerd (the jailer
// changes uid and makes device nodes), a jailer beside firecracker or on
// PATH, and a VM name that keeps the chroot's socket paths short enough.
// A bridged VM's tap is handed to the jail's uid by fcproc. uid and gid
// are the VM's VMM user (vmmUsers.credential).
func fcJail(cfg fcproc.Config, stateDir string, uid, gid uint32) (*fcproc.Jail, string) {
	if os.Geteuid() != 0 {
		return nil, "no jailer: bangerd is not root"
	}
	jailer, ok := fcproc.JailerPath(cfg.Binary)
	if !ok {
		return nil, "no jailer installed: Firecracker runs as root with its seccomp filters only"
	}
	j := &fcproc.Jail{Binary: jailer, UID: uid, GID: gid, BaseDir: filepath.Join(stateDir, jailBaseName)}
	if err := fcproc.JailFits(cfg, *j); err != nil {
		return nil, "jailer not used: " + err.Error()
	}
	return j, "jailed by " + jailer + " as uid " + strconv.FormatUint(uint64(uid), 10)
}
