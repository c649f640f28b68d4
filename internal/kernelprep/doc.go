// Package kernelprep turns a Debian kernel package (a .deb or an already
// extracted tree) into the artefacts banger boots: an uncompressed x86_64
// vmlinux, an initramfs that loads the virtio, vsock and ext4 modules in
// dependency order and switches to the root disk, and the module tree to
// install in the guest's root filesystem.
package kernelprep
