// Command bangerd is banger's daemon: it owns the store, images, kernels, VMs
// and long operations, and serves the CLI over a Unix socket.
package main

import (
	"os"

	"banger/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], daemon.MainOptions{}))
}
