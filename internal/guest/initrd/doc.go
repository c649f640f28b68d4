// Package initrd is the program that runs as /init, PID 1, inside banger's
// initramfs: it loads the kernel modules the guest needs, mounts the root
// disk and hands over to the root filesystem's init. For an image that
// runs this build's agent from systemd units, it starts the agent first
// (early.go), so that the agent is ready before systemd has loaded its
// units.
package initrd
