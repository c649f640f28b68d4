// Package filekind recognises the files banger is handed as parts of an
// image, before it accepts them: an ext4 filesystem image (by its
// superblock) and an initrd (a newc cpio archive, bare or compressed with
// gzip, zstd, xz, lzma, bzip2 or lz4). Open refuses anything that is not a
// regular file of the user's: devices, fifos, sockets, directories and
// files of kernel pseudo-filesystems such as /proc, after resolving
// symlinks. The sniffers read only a file's first bytes and never trust a
// length they read.
package filekind
