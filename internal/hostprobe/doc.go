// Package hostprobe finds out what this host offers banger, once, for
// bangerd and `banger doctor` alike: the Firecracker and QEMU binaries,
// whether /dev/kvm can boot anything (usable, absent, not usable by this
// user, or from the kvm_pvm module, on which only QEMU under TCG boots),
// /dev/net/tun, device-mapper snapshots and loop devices, and reflink
// clones in the state dir. Its result is Facts, plain data; the rules
// banger decides by — which VMM `auto` picks, which accelerator QEMU gets,
// how a VM's root disk is made — are pure functions over Facts
// (ChooseVMM, ChooseAccel, ChooseCOW), so the daemon and doctor give the
// same answer in the same words.
//
// It only reads the host: the one thing it writes is a pair of small
// temporary files in the state dir for the reflink test, removed at once.
// Every host path it reads goes through Host.Root, so tests point it at a
// fake tree; under a fake root it opens device files but makes no ioctls
// on them (they are plain files there). It imports nothing of the daemon,
// so the CLI links it without the daemon's subsystems.
package hostprobe
