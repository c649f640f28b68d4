// Package vmm is what the daemon needs from a virtual machine monitor, as
// one interface: a Driver says whether it can run on this host, starts a
// VM from a Spec (returning a Machine: its process, its logs, its guest
// agent link), adopts a VMM found running after a daemon restart, and
// cleans up what a VMM leaves outside its run dir. fcproc and qemuproc
// each provide a Driver; the daemon looks one up by name in a Registry and
// never switches on the VMM's kind. The package also holds the two ways
// of reaching a guest agent (a connection per stream, or one multiplexed
// connection) that drivers hand out, and the VMM-neutral side of snapshots
// (snapshot.go): a Machine that can save a running guest is a Snapshotter,
// Spec.Restore resumes a saved State instead of booting, and CheckRestore
// says why a State cannot be restored. vmmtest has a fake Driver for tests.
package vmm
