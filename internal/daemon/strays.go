package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/daemon/vmm"
)

// killStrays SIGKILLs every VMM process of runDir (one whose command line
// a driver owns: a QEMU with its -name marker, a Firecracker with its API
// socket there) and waits, bounded, for
// them to go. It returns how many it killed. A process that only names a
// file in runDir (someone's `tail -f .../console.log`) is left alone.
func killStrays(runDir string, drivers vmm.Registry) int {
	if runDir == "" {
		return 0
	}
	// A VMM that names no host path (a jailed Firecracker) is found by
	// what its driver keeps outside the run dir.
	jailed := 0
	for _, d := range drivers {
		jailed += d.Cleanup(runDir)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmd), "\x00"), "\x00")
		for _, d := range drivers {
			if d.OwnsCommandLine(args, runDir) {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && processRunning(pid) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return jailed + len(pids)
}

// processRunning is false for a pid that is gone or a zombie.
func processRunning(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return !(i > 0 && i+2 < len(st) && st[i+2] == 'Z')
}
