// Package opstate runs bangerd's long work as operations: each has an id, a
// kind, a target, a phase, progress and a final state, is persisted through a
// small Persister port (the SQLite store in production), can be watched while
// it runs and cancelled, and is marked failed at the next start when the daemon
// died under it.
package opstate
