// Package daemon is bangerd's composition root: it takes the state-dir lock,
// opens the store, wires the operation manager and the other subsystems
// together, serves the JSON API on the Unix socket, and shuts everything
// down in order. Pure helpers live in its subpackages; this package is the
// only place that knows all of them. See ARCHITECTURE.md beside this file.
package daemon
