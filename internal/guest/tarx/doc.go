// Package tarx packs a file tree into a tar stream and unpacks one into a
// directory. Pack never follows a symlink inside the tree and reads only
// regular files. Extract never writes outside its destination nor follows
// a symlink; by default it treats the stream as untrusted (nothing
// existing is replaced, setuid bits are dropped, devices are refused, and
// Options.Top confines the stream to one name), and its Options relax
// that for a trusted sender. The guest agent and the host client both use
// it for copies.
package tarx
