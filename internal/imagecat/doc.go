// Package imagecat is banger's built-in image catalog: the embedded list of
// named images (rootfs and optional work-seed, plus the kernel entry each one
// boots) with where their pre-built bundle is published, if anywhere, and how
// to build them locally otherwise.
package imagecat
