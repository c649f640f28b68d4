package daemon

import (
	"fmt"
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
// changes uid and makes device nodes), a jailer (jailerBin, the config's
// jailer_bin; else one beside firecracker or on PATH), and a VM name that keeps the chroot's socket paths short enough.
// A bridged VM's tap is handed to the jail's uid by fcproc. uid and gid
// are the VM's VMM user (vmmUsers.credential). A jailer_bin that is not
// an executable file is an error: the user asked for the jail.
func fcJail(cfg fcproc.Config, jailerBin, stateDir string, uid, gid uint32) (*fcproc.Jail, string, error) {
	if os.Geteuid() != 0 {
		return nil, "no jailer: bangerd is not root", nil
	}
	jailer, ok := jailerBin, true
	if jailer != "" {
		if fi, err := os.Stat(jailer); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, "", fmt.Errorf("jailer_bin %s is not an executable file: install Firecracker's jailer there, or remove jailer_bin", jailer)
		}
	} else if jailer, ok = fcproc.JailerPath(cfg.Binary); !ok {
		return nil, "no jailer installed: Firecracker runs as root with its seccomp filters only", nil
	}
	j := &fcproc.Jail{Binary: jailer, UID: uid, GID: gid, BaseDir: filepath.Join(stateDir, jailBaseName)}
	if err := fcproc.JailFits(cfg, *j); err != nil {
		return nil, "jailer not used: " + err.Error(), nil
	}
	return j, "jailed by " + jailer + " as uid " + strconv.FormatUint(uint64(uid), 10), nil
}
