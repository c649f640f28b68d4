// Package e2e holds banger's end-to-end tests: they build the three
// binaries, import Debian's real kernel, build a small test image, and boot
// real VMs under QEMU (TCG where KVM is missing) through the CLI, the way a
// user would. They run with `make e2e` (build tag e2e) and skip, saying
// why, when the machine lacks QEMU, apt or the image tools.
package e2e
