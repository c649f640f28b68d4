// Package release knows banger's signed releases: where a release tree
// keeps its files, the pinned public key and the check of a signature made
// with it, the SHA256SUMS format, release versions, and the reading of a
// release archive. Source downloads with bounds and trusts nothing of a
// version before the signature over its SHA256SUMS holds; Download streams
// into the caller's writer and fails unless the bytes match the signed
// sums, so the caller keeps what it wrote only when Download succeeds
// (and extracts the archive only then). It never installs (internal/update
// does).
package release
