// Package bundle fetches a catalog bundle (a tar archive compressed with
// zstd) from an http, https or file URL, verifies its size and sha256 while
// streaming it, and unpacks it with internal/tarsafe into a directory
// atomically: into a temporary directory beside the destination, then
// renamed into place. It also writes bundles (Pack). It is a pure helper of
// the daemon and knows nothing of the store or of operations beyond the
// small Progress port.
package bundle
