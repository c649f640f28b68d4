// Command banger-vsock-agent runs inside every banger guest: it applies the
// VM's settings at boot and serves the guest-agent protocol to bangerd.
package main

import (
	"fmt"
	"os"

	"banger/internal/buildinfo"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("banger-vsock-agent %s\n", buildinfo.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "banger-vsock-agent: serving the guest protocol is not implemented yet")
	os.Exit(1)
}
