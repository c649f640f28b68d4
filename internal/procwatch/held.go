package procwatch

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PidfdsHeld counts the pidfds this process holds of pid, or of any
// process when pid is 0. Tests use it to check that every Handle releases
// its descriptor.
func PidfdsHeld(pid int) (int, error) {
	const fdDir = "/proc/self/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err != nil || l != "anon_inode:[pidfd]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "Pid:"); ok {
				if p, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && (pid == 0 || p == pid) {
					n++
				}
			}
		}
	}
	return n, nil
}
