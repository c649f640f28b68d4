// Package workspace owns each VM's directory under the state dir and the
// disks in it: it makes a VM's writable root disk from an image's rootfs
// with a copy-on-write strategy (reflink clone or sparse copy; device-mapper
// snapshots come from dmsnap), sizes it, and removes all of it with the VM.
// A new directory is marked uncommitted until its VM's row is recorded, so
// a create cut short can be told from a VM the store has forgotten, whose
// directory is moved aside (.orphaned-*), never deleted.
package workspace
