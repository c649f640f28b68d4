package tarx

import (
	"archive/tar"
	"bufio"
	"bytes"
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

// FileWriter is a Pack destination that can take the contents of a regular
// file straight from the file (for example with sendfile(2) into a socket)
// instead of through Pack's buffer. WriteFile writes the next n bytes of f,
// from its current offset; if f has fewer, its error wraps
// io.ErrUnexpectedEOF.
type FileWriter interface {
	io.Writer
	WriteFile(f *os.File, n int64) (int64, error)
}

// directMin is the size from which Pack hands a file to a FileWriter;
// smaller files are cheaper to copy into the buffer along with their
// neighbours.
const directMin = 128 << 10

// blockSize is tar's unit: headers are one block, file contents are padded
// to whole blocks, and the archive ends with two zero blocks.
const blockSize = 512

// Pack writes src as a tar stream to w. The stream's single top-level entry
// is src's base name; a directory is walked without following symlinks, which
// are stored as symlinks, and each file is opened without following one and
// checked to be the file the walk listed. Files with several links inside the tree are stored
// once and then as hard links. Sockets are skipped; devices and FIFOs are
// refused. The tar end-of-archive marker is written last. If w is a
// FileWriter, the contents of large files go to its WriteFile.
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
	// header and small file.
	pk := &packer{bw: bufio.NewWriterSize(w, 256<<10), links: map[[2]uint64]string{}}
	pk.fw, _ = w.(FileWriter)
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
		return pk.entry(p, path.Join(base, filepath.ToSlash(rel)))
	})
	if err == nil {
		_, err = pk.bw.Write(zeroBlock[:]) // the end: two zero blocks
	}
	if err == nil {
		_, err = pk.bw.Write(zeroBlock[:])
	}
	if err == nil {
		err = pk.bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", src, err)
	}
	return nil
}

// packer writes the tar stream. archive/tar formats each header (into hdr);
// the packer writes the contents and the padding itself, so that a file's
// contents can go to a FileWriter without passing through tar.Writer. The
// bytes are the same as tar.Writer's.
type packer struct {
	bw    *bufio.Writer
	fw    FileWriter // nil when the destination is a plain io.Writer
	hdr   bytes.Buffer
	links map[[2]uint64]string
}

func (pk *packer) writeHeader(hdr *tar.Header) error {
	pk.hdr.Reset()
	// A fresh tar.Writer per header: it would otherwise expect the
	// contents to come through it.
	if err := tar.NewWriter(&pk.hdr).WriteHeader(hdr); err != nil {
		return err
	}
	_, err := pk.bw.Write(pk.hdr.Bytes())
	return err
}

func (pk *packer) entry(file, name string) error {
	fi, err := os.Lstat(file)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	switch {
	case mode&fs.ModeSocket != 0:
		return nil
	case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0:
		return fmt.Errorf("%s is a device or FIFO; only files, directories and symlinks can be copied: remove it or copy without it", file)
	}
	var target string
	if mode&fs.ModeSymlink != 0 {
		if target, err = os.Readlink(file); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, target)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
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
			if first, seen := pk.links[key]; seen {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				hdr.Size = 0
				return pk.writeHeader(hdr)
			}
			pk.links[key] = name
		}
	}
	if err := pk.writeHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if !mode.IsRegular() || hdr.Size == 0 {
		return nil
	}
	f, err := openListed(file, fi)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pk.contents(f, hdr.Size); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s changed size while being copied (%d bytes expected); copy it again once it is quiet", file, hdr.Size)
		}
		return fmt.Errorf("%s: %w", file, err)
	}
	// A file that grew would have more to give than its header says.
	if fi, err := f.Stat(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	} else if fi.Size() != hdr.Size {
		return fmt.Errorf("%s changed size while being copied (%d bytes expected, %d now); copy it again once it is quiet", file, hdr.Size, fi.Size())
	}
	if pad := -hdr.Size & (blockSize - 1); pad > 0 {
		_, err = pk.bw.Write(zeroBlock[:pad])
	}
	return err
}

var zeroBlock [blockSize]byte

// openListed opens the regular file the walk listed as fi, making sure it
// is still that file: the open follows no symlink in the last component
// and does not block (a FIFO put in its place would otherwise wait for a
// writer forever), and what it opened must be the same regular file. A
// tree that changes under the walk cannot make Pack read something else.
func openListed(file string, fi fs.FileInfo) (*os.File, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	got, err := f.Stat()
	if err == nil && (!got.Mode().IsRegular() || !os.SameFile(fi, got)) {
		err = fmt.Errorf("%s changed while being copied: it is no longer the file that was listed; copy it again once it is quiet", file)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// contents writes the n bytes of f.
func (pk *packer) contents(f *os.File, n int64) error {
	if pk.fw != nil && n >= directMin {
		if err := pk.bw.Flush(); err != nil {
			return err
		}
		_, err := pk.fw.WriteFile(f, n)
		return err
	}
	// The buffer reads straight from the file (bufio.Writer.ReadFrom).
	_, err := io.CopyN(pk.bw, f, n)
	return err
}
