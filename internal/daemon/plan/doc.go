// Package plan runs a sequence of named steps, each with its undo: in
// order, stopping at the first that fails (or when the context ends), and
// then undoing the steps that ran, the failing one included, in reverse.
// The same undos, run on their own, release everything a completed run
// holds. The daemon starts a VM as a plan (run dir, root device, network,
// VMM, pid, ready) and stops it through the plan's undos.
package plan
