// Package ociregistry gives tests an OCI registry served from the test
// process over plain HTTP on loopback, and one-layer linux/amd64 images to
// push to it: a layer from tar entries (Layer) or from a directory tree
// (DirLayer). It is imported by tests only.
package ociregistry
