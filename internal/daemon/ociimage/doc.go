// Package ociimage turns an OCI or Docker image in a registry into an ext4
// root filesystem image: it resolves the reference (choosing one platform from
// a multi-arch index), streams each layer into a private tree with whiteouts
// applied and escapes refused, lets the caller add its own files, and writes
// the tree into a sparse ext4 file with mkfs.ext4 -d, atomically. It knows
// nothing about the daemon or the store; see docs/oci-import.md.
package ociimage
