package update

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is a running process.
type Proc struct {
	PID int
	UID int
}

// ProcsOf lists the processes whose executable is exe (as /proc/PID/exe
// names it, so through no link), read from procRoot ("/proc"). Processes
// it may not inspect are skipped: as root it sees them all.
func ProcsOf(procRoot, exe string) []Proc {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		target, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil || strings.TrimSuffix(target, " (deleted)") != exe {
			continue
		}
		if uid, ok := procUID(filepath.Join(dir, "status")); ok {
			out = append(out, Proc{PID: pid, UID: uid})
		}
	}
	return out
}

// procUID reads the real uid from a /proc/PID/status file.
func procUID(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			uid, err := strconv.Atoi(f[0])
			return uid, err == nil
		}
	}
	return 0, false
}
