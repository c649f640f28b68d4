// Package reliability is banger's fault suite: it builds the binaries and
// drives a real bangerd through the CLI while it injects the faults a
// careless user, a crash or a full disk would: SIGKILL of bangerd at every
// phase of every operation kind, a state dir on a small tmpfs, a store
// emptied, deleted, corrupted or made read-only, fifty parallel creates and
// removes, and hostile inputs (files registered as disks, names, OCI layers
// that try to escape). Each test states what the user saw and whether any
// data was lost, and the suite writes the table to
// build/reliability/results.md (docs/reliability.md explains it).
//
// It runs with `make reliability` (build tag reliability), as root for the
// tmpfs and read-only cases, and skips, saying why, where the machine lacks
// what a case needs. It boots no VM.
package reliability
