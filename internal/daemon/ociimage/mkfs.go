package ociimage

import (
	"banger/internal/atomicfile"
	"banger/internal/childproc"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const (
	blockSize  = 4096
	inodeSize  = 256
	inodeRatio = 16384 // bytes per inode at the least, like mke2fs's default
	mib        = 1 << 20
)

type treeUsage struct {
	bytes  int64 // space the files need in 4 KiB blocks
	inodes int64 // distinct inodes
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// measureTree sums what the tree needs on ext4: whole 4 KiB blocks for file
// data, one block at least per directory, a block for long symlinks, and one
// inode per distinct inode (hardlinks count once).
func measureTree(root string) (treeUsage, error) {
	var u treeUsage
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !info.IsDir() {
			k := [2]uint64{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.inodes++
		switch {
		case info.Mode().IsRegular():
			u.bytes += roundUp(info.Size(), blockSize)
		case info.IsDir():
			u.bytes += max(blockSize, roundUp(info.Size(), blockSize))
		case info.Mode()&fs.ModeSymlink != 0 && info.Size() >= 60:
			u.bytes += blockSize
		}
		return nil
	})
	return u, err
}

// journalBytes mirrors mke2fs's default journal size for a filesystem of the
// given size.
func journalBytes(fsBytes int64) int64 {
	blocks := fsBytes / blockSize
	switch {
	case blocks < 2048:
		return 0
	case blocks < 32768:
		return 4 * mib
	case blocks < 256*1024:
		return 16 * mib
	case blocks < 512*1024:
		return 32 * mib
	case blocks < 4096*1024:
		return 64 * mib
	case blocks < 8192*1024:
		return 128 * mib
	case blocks < 16384*1024:
		return 256 * mib
	case blocks < 32768*1024:
		return 512 * mib
	default:
		return 1024 * mib
	}
}

func headroomFor(content int64, opts Options) int64 {
	if opts.Headroom > 0 {
		return opts.Headroom
	}
	return max(DefaultMinHeadroom, content/5)
}

// imageSize is content plus filesystem metadata plus headroom, at least
// opts.MinSize, rounded up to a MiB.
func imageSize(u treeUsage, opts Options) int64 {
	base := u.bytes + u.bytes/64 + headroomFor(u.bytes, opts) // 1/64: bitmaps, descriptors, extent blocks
	base += journalBytes(base)
	size := base + inodeCount(u, base)*inodeSize
	size = max(size, opts.MinSize)
	return roundUp(size, mib)
}

// inodeCount leaves room for a quarter more files than the tree has and never
// goes below mke2fs's usual density for the free space.
func inodeCount(u treeUsage, size int64) int64 {
	return max(u.inodes+u.inodes/4+8192, size/inodeRatio)
}

func lookPath(mkfs string) (string, error) {
	p, err := exec.LookPath(mkfs)
	if err != nil {
		return "", fmt.Errorf("mkfs.ext4 not found (%s): install e2fsprogs or set the mkfs path: %w", mkfs, err)
	}
	return p, nil
}

// writeExt4 makes a sparse file of size bytes beside dest, fills it with the
// tree by mkfs.ext4 -d (no mount needed), runs finish on it when finish is
// not nil, and renames it to dest. When mkfs runs out of space it retries
// once with a larger file. It returns the final size.
func writeExt4(ctx context.Context, mkfs, tree, dest string, size, inodes int64, finish func(image string) error) (_ int64, err error) {
	f, err := atomicfile.Create(dest, atomicfile.Mode(0o600))
	if err != nil {
		return 0, fmt.Errorf("create temporary image beside %s: %w", dest, err)
	}
	defer f.Cleanup()
	tmp := f.Name()
	for attempt := 0; ; attempt++ {
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("size %s: %w", tmp, err)
		}
		if err := f.Truncate(size); err != nil {
			return 0, fmt.Errorf("size %s to %d bytes: %w", tmp, size, err)
		}
		n := inodeCount(treeUsage{inodes: inodes}, size)
		cmd := exec.CommandContext(ctx, mkfs,
			"-q", "-F",
			"-L", "rootfs",
			"-b", strconv.Itoa(blockSize),
			"-I", strconv.Itoa(inodeSize),
			"-N", strconv.FormatInt(n, 10),
			"-m", "0",
			"-E", "root_owner=0:0",
			"-d", tree,
			tmp)
		out, runErr := childproc.CombinedOutput(cmd)
		if runErr == nil {
			break
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if attempt == 0 && noSpace(out) {
			size = roundUp(size+size/2+64*mib, mib)
			continue
		}
		return 0, fmt.Errorf("mkfs.ext4 -d of the unpacked tree into %d bytes failed: %w: %s", size, runErr, strings.TrimSpace(string(out)))
	}
	if finish != nil {
		if err := finish(tmp); err != nil {
			return 0, err
		}
	}
	if err := f.Commit(); err != nil {
		return 0, fmt.Errorf("move image into place at %s: %w", dest, err)
	}
	return size, nil
}

func noSpace(out []byte) bool {
	for _, s := range []string{"No space left", "Could not allocate", "ENOSPC", "not enough space"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}
