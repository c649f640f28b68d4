// Package ociimage turns an OCI or Docker image in a registry into an ext4
// root filesystem image: it resolves the reference (choosing one platform from
// a multi-arch index), streams each layer through internal/tarsafe into a
// private tree with whiteouts applied, escapes refused and the entries
// bounded, lets the caller add its own files, and writes the tree into a
// sparse ext4 file with mkfs.ext4 -d, atomically. Without root it records the
// owners, modes, device nodes and xattrs the tree cannot carry and writes
// them into the image with debugfs, so that root and a user make the same
// image. It knows nothing about the daemon or the store; see
// docs/oci-import.md.
package ociimage
