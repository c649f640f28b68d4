// Package workspace owns each VM's directory under the state dir and the
// disks in it: it makes a VM's writable root disk from an image's rootfs
// with a copy-on-write strategy (reflink clone or sparse copy; device-mapper
// snapshots come from dmsnap), sizes it, and removes all of it with the VM.
// A directory the store has no row for is moved aside (.orphaned-*), never
// deleted.
package workspace
