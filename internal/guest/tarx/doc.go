// Package tarx packs a file tree into a tar stream and unpacks one into a
// directory, keeping modes, ownership (when asked), symlinks and empty
// directories, and refusing entries that would land outside the
// destination. The guest agent and the host client both use it for copies.
package tarx
