// Command bangerd is banger's daemon: it owns the store, images, kernels, VMs
// and long operations, and serves the CLI over a Unix socket. `bangerd
// helper` is the privileged helper instead (privhelperd), run as root.
package main

import (
	"os"

	"banger/internal/daemon"
	"banger/internal/daemon/privhelperd"
)

func main() {
	// The helper runs as root: it goes straight to its server, before
	// anything of the daemon's (config, state dir, store, log) is touched.
	if len(os.Args) > 1 && os.Args[1] == "helper" {
		os.Exit(privhelperd.Main(os.Args[2:]))
	}
	os.Exit(daemon.Main(os.Args[1:], daemon.MainOptions{}))
}
