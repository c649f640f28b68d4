// Package agentcmd is the banger-vsock-agent program: its commands (serve,
// boot, run, init, version), what each wires together from the guest
// packages (the kernel command line read by boot, the boot duties, the
// agent served on the transport the command line names), and its handing
// over to initrd when it runs as the initramfs's /init. The main only calls
// Run; everything that runs in the guest lives in internal/guest.
package agentcmd
