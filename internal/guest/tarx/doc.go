// Package tarx packs a file tree into a tar stream and unpacks one into a
// directory, for vm cp: the guest agent and the host client both use it.
// Pack never follows a symlink inside the tree and reads only regular
// files. Extract is internal/tarsafe's extractor under the copy's policy:
// by default the stream is untrusted (nothing existing is replaced,
// setuid bits are dropped, devices are refused, and Options.Top confines
// the stream to one name), and its Options relax that for a trusted
// sender.
package tarx
