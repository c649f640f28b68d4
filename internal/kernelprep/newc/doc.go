// Package newc reads and writes cpio archives in the "newc" (SVR4, no CRC)
// format, the one the Linux kernel unpacks as an initramfs.
package newc
