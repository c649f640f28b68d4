//go:build !amd64

package qemuproc

// measureTSCkHz cannot read the TSC off amd64.
func measureTSCkHz() (int, bool) { return 0, false }
