// Package buildinfo holds the version stamped into every banger binary at
// link time, so the CLI, the daemon and the guest agent can tell each other
// apart and refuse a mismatch.
package buildinfo
