package daemon

import (
	"banger/internal/procwatch"
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
	killed := procwatch.KillMatching(func(p procwatch.Proc) bool {
		args, err := p.Cmdline()
		if err != nil {
			return false
		}
		for _, d := range drivers {
			if d.OwnsCommandLine(args, runDir) {
				return true
			}
		}
		return false
	}, 5*time.Second)
	return jailed + killed
}
