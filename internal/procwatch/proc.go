package procwatch

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Proc is one entry of the process table. Its methods read /proc when
// called: the process may have gone (an error satisfying
// errors.Is(err, os.ErrNotExist)) or, for a pid not held by a Handle,
// been replaced.
type Proc struct {
	PID int
}

// Scan lists every process, this one included, in /proc's order.
func Scan() ([]Proc, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", procRoot, err)
	}
	procs := make([]Proc, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			procs = append(procs, Proc{PID: pid})
		}
	}
	return procs, nil
}

// Stat reads the process's /proc/PID/stat.
func (p Proc) Stat() (Stat, error) { return ReadStat(p.PID) }

// Cmdline returns the arguments of /proc/PID/cmdline (split at its NULs;
// nil for a kernel thread or a zombie, which have none).
func (p Proc) Cmdline() ([]string, error) {
	data, err := os.ReadFile(procPath(p.PID, "cmdline"))
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// CmdlineString is the command line joined with spaces, for messages; ""
// when it cannot be read.
func (p Proc) CmdlineString() string {
	args, _ := p.Cmdline()
	return strings.Join(args, " ")
}

// Cwd returns the process's working directory, without the " (deleted)"
// the kernel appends once it has been removed.
func (p Proc) Cwd() (string, error) {
	cwd, err := os.Readlink(procPath(p.PID, "cwd"))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(cwd, " (deleted)"), nil
}

// Root stats the process's root directory (/proc/PID/root, followed): a
// chrooted process's chroot. Compare it with os.SameFile.
func (p Proc) Root() (os.FileInfo, error) {
	return os.Stat(procPath(p.PID, "root"))
}

// InRoot reports whether the process is chrooted (or pivoted) into dir.
func (p Proc) InRoot(dir string) bool {
	a, err := p.Root()
	if err != nil {
		return false
	}
	b, err := os.Stat(dir)
	return err == nil && os.SameFile(a, b)
}

// UIDs returns the real, effective, saved and filesystem uids of the
// process (the Uid: line of /proc/PID/status).
func (p Proc) UIDs() ([]uint32, error) {
	path := procPath(p.PID, "status")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(l, "Uid:")
		if !ok {
			continue
		}
		var uids []uint32
		for _, f := range strings.Fields(rest) {
			v, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s: uid %q: %w", path, f, err)
			}
			uids = append(uids, uint32(v))
		}
		return uids, nil
	}
	return nil, fmt.Errorf("%s: no Uid: line", path)
}
