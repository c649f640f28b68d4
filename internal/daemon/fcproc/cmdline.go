package fcproc

import "strings"

// IsCommandLineOf reports whether args (a /proc/PID/cmdline split at its
// NULs) is the argv of a Firecracker started in dir: it passes exactly
// dir's API socket to --api-sock. A command that merely names a file in
// dir is not.
func IsCommandLineOf(args []string, dir string) bool {
	return cmdlineHasAPISock(args, APISocketPath(strings.TrimRight(dir, "/")))
}

// cmdlineHasAPISock reports whether args carry "--api-sock sock" (or
// "--api-sock=sock").
func cmdlineHasAPISock(args []string, sock string) bool {
	for i, a := range args {
		if a == "--api-sock" && i+1 < len(args) && args[i+1] == sock {
			return true
		}
		if a == "--api-sock="+sock {
			return true
		}
	}
	return false
}
