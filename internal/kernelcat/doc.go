// Package kernelcat is banger's built-in kernel catalog: the embedded list of
// named guest kernels (vmlinux, optional initrd and modules) with where their
// pre-built bundle is published, if anywhere, and how to build them locally
// otherwise.
package kernelcat
