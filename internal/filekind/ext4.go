package filekind

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ext2/3/4 superblock layout (little endian, 1024 bytes at offset 1024).
const (
	sbOffset          = 1024
	sbSize            = 1024
	sbInodes          = 0x00
	sbBlocksLo        = 0x04
	sbLogBlockSize    = 0x18
	sbBlocksPerGroup  = 0x20
	sbInodesPerGroup  = 0x28
	sbMagic           = 0x38
	sbFeatureIncompat = 0x60
	sbBlocksHi        = 0x150
	extMagic          = 0xEF53
	incompat64Bit     = 0x80
	maxLogBlockSize   = 6 // 64 KiB, the largest block size ext4 has
)

// Ext4 checks that r, a file of size bytes, holds an ext2/3/4 filesystem
// (the guest mounts all three with its ext4 driver): a superblock with the
// magic 0xEF53 at byte 1080, a block size from 1 to 64 KiB, non-zero block,
// inode and group counts, and a filesystem that fits in the file. It returns
// the filesystem's size in bytes. The error says what is wrong, in words
// that fit in "it is not an ext4 image (...)".
func Ext4(r io.ReaderAt, size int64) (int64, error) {
	if size < sbOffset+sbSize {
		return 0, fmt.Errorf("only %d bytes, too small to hold an ext4 superblock", size)
	}
	sb := make([]byte, sbSize)
	if _, err := r.ReadAt(sb, sbOffset); err != nil {
		return 0, fmt.Errorf("read the superblock: %w", err)
	}
	return ParseExt4Superblock(sb, size)
}

// ParseExt4Superblock checks the 1024 bytes of a superblock for a file of
// size bytes; see Ext4.
func ParseExt4Superblock(sb []byte, size int64) (int64, error) {
	if len(sb) < sbSize {
		return 0, errors.New("a truncated superblock")
	}
	le := binary.LittleEndian
	if m := le.Uint16(sb[sbMagic:]); m != extMagic {
		return 0, errors.New("no ext4 superblock")
	}
	logBlock := le.Uint32(sb[sbLogBlockSize:])
	if logBlock > maxLogBlockSize {
		return 0, fmt.Errorf("an impossible block size in its superblock (1024 << %d)", logBlock)
	}
	blocks := uint64(le.Uint32(sb[sbBlocksLo:]))
	if le.Uint32(sb[sbFeatureIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(sb[sbBlocksHi:])) << 32
	}
	if blocks == 0 || le.Uint32(sb[sbInodes:]) == 0 || le.Uint32(sb[sbBlocksPerGroup:]) == 0 || le.Uint32(sb[sbInodesPerGroup:]) == 0 {
		return 0, errors.New("a zero block, inode or group count in its superblock")
	}
	bsize := uint64(1024) << logBlock
	if size < 0 || blocks > uint64(size)/bsize {
		return 0, fmt.Errorf("its superblock announces %d blocks of %d bytes, more than the file's %d bytes: truncated", blocks, bsize, size)
	}
	return int64(blocks * bsize), nil
}
