// Package initrd is the program that runs as /init, PID 1, inside banger's
// initramfs: it loads the kernel modules the guest needs, mounts the root
// disk and hands over to the root filesystem's init.
package initrd
