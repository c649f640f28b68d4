// Package golden builds banger's catalog images locally, without Docker:
// debootstrap from the host's own Debian mirror, banger's guest pieces
// installed and enabled, root login by key only, then an ext4 image made
// with mkfs.ext4 -d.
package golden
