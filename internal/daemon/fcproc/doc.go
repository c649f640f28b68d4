// Package fcproc runs one Firecracker process for one VM: it spawns the
// binary, configures it over its API socket (a small direct HTTP client, no
// SDK) in named, traceable steps, starts the instance, and later stops it
// (guest poweroff, then Ctrl-Alt-Del, then SIGKILL) or re-attaches to it
// after a daemon restart. It is a pure helper: it knows nothing of the store
// or of the daemon, only of Firecracker, its sockets and its process.
//
// Firecracker always runs with its own seccomp filters (spawnArgs never
// passes --no-seccomp). jail.go builds the jailer's command line and the
// chroot's layout (Jail, planJail, prepare), tested on their own; Start
// does not use the jailer yet.
package fcproc
