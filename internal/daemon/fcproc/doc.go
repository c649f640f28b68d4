// Package fcproc runs one Firecracker process for one VM: it spawns the
// binary, configures it over its API socket (a small direct HTTP client, no
// SDK) in named, traceable steps, starts the instance, and later stops it
// (guest poweroff, then Ctrl-Alt-Del, then SIGKILL) or re-attaches to it
// after a daemon restart. It is a pure helper: it knows nothing of the store
// or of the daemon, only of Firecracker, its sockets and its process.
//
// Firecracker always runs with its own seccomp filters (spawnArgs never
// passes --no-seccomp). With Config.Jail, Start runs it under Firecracker's
// jailer (jail.go): a chroot of its own, a uid of its own, no capabilities;
// Adopt, CleanupJail and SweepJails find and clean such a VM by its chroot.
//
// Unjailed, Firecracker runs in the VM's directory and is given its drives
// (symlinks named DriveLinkName) and vsock socket by names relative to it,
// so that a snapshot (snapshot.go) fits any VM of the same drives: a clone
// restored in its own directory opens its own files.
package fcproc
