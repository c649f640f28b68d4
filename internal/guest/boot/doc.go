// Package boot applies a guest's per-VM settings at boot: it reads the
// banger.* kernel command-line parameters and sets the hostname, the network,
// DNS and root's SSH keys, grows the root filesystem to fill its disk, and
// leaves a ready marker behind. The banger-vsock-agent binary calls it before
// (or instead of a separate unit before) serving the guest-agent protocol.
// On a "resumed" request it gives a VM restored from a snapshot an identity
// of its own (Resume): fresh kernel randomness first, then the clock, host
// name, network, DNS and new SSH host keys.
package boot
