// Command banger-vsock-agent runs inside every banger guest: it applies the
// VM's settings at boot and serves the guest-agent protocol to bangerd. Run
// as /init (PID 1) in banger's initramfs, it is the initramfs's init instead.
//
// Usage:
//
//	banger-vsock-agent [serve]   serve the guest-agent protocol (the default)
//	banger-vsock-agent boot      apply the banger.* kernel parameters once
//	banger-vsock-agent run       boot, and serve meanwhile (inits without systemd)
//	banger-vsock-agent init [-- CMD...]
//	                             mount the basics, boot while serving, then
//	                             start CMD (images without an init system)
//	banger-vsock-agent version   print the version and protocol
//
// The program is internal/guest/agentcmd.
package main

import (
	"os"

	"banger/internal/guest/agentcmd"
)

func main() {
	if agentcmd.IsInitramfsInit() {
		agentcmd.RunInitramfs()
	}
	os.Exit(agentcmd.Run(os.Args[1:]))
}
