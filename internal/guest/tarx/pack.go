package tarx

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// Pack writes src as a tar stream to w. The stream's single top-level entry
// is src's base name; a directory is walked without following symlinks, which
// are stored as symlinks. Files with several links inside the tree are stored
// once and then as hard links. Sockets are skipped; devices and FIFOs are
// refused. The tar end-of-archive marker is written last.
func Pack(ctx context.Context, w io.Writer, src string) error {
	src = filepath.Clean(src)
	base := filepath.Base(src)
	if base == string(filepath.Separator) || base == "." || base == ".." {
		return fmt.Errorf("pack %s: name a file or directory below it, not the root itself", src)
	}
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	// Buffer so that the stream below sees large writes, not one per
	// header and 32 KiB piece.
	bw := bufio.NewWriterSize(w, 256<<10)
	tw := tar.NewWriter(bw)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := path.Join(base, filepath.ToSlash(rel))
		return packEntry(tw, p, name, links)
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	return nil
}

func packEntry(tw *tar.Writer, p, name string, links map[[2]uint64]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	switch {
	case mode&fs.ModeSocket != 0:
		return nil
	case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0:
		return fmt.Errorf("%s is a device or FIFO; only files, directories and symlinks can be copied", p)
	}
	var target string
	if mode&fs.ModeSymlink != 0 {
		if target, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, target)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	hdr.Format = tar.FormatPAX
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		if mode.IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, seen := links[key]; seen {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				hdr.Size = 0
				return tw.WriteHeader(hdr)
			}
			links[key] = name
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if !mode.IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(tw, f)
	if err == nil && n != hdr.Size || errors.Is(err, tar.ErrWriteTooLong) {
		return fmt.Errorf("%s changed size while being copied (%d bytes expected); copy it again once it is quiet", p, hdr.Size)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
