// Package release knows banger's signed releases: where a release tree
// keeps its files, the pinned public key and the check of a signature made
// with it, the SHA256SUMS format, release versions, and the reading of a
// release archive. It downloads with bounds and verifies before anything is
// handed on; it never installs (internal/update does).
package release
