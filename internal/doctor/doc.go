// Package doctor checks whether this host has what banger needs — a VMM and
// KVM, disk space and copy-on-write support in the state dir, a sound store
// that belongs to its state dir (and the VM directories moved aside), the kernel
// features behind networking and device-mapper, a valid config and a
// reachable daemon — and says, for every check that is not ok, how to fix
// it. The host facts and the VMM and COW choices come from hostprobe, the
// probe and rules bangerd uses, so doctor says what bangerd will do in its
// words; this package turns them into findings with fixes. It only reads
// the host (its probes leave nothing behind) and never imports the daemon:
// the CLI hands it the config and the daemon's answer.
package doctor
