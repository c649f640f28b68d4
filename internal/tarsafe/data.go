package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// copyBufSize matches the guest protocol's data frames.
const copyBufSize = 256 << 10

// holeBlock is the granularity at which runs of zeros become holes.
const holeBlock = 4 << 10

var zeroBlock = make([]byte, holeBlock)

// divertReader is the stream under archive/tar. Normally it passes reads
// through. While a regular file's contents are being extracted from a
// FileSource, to is that file: a read of n bytes then moves them into the
// file with ReadToFile and leaves the caller's buffer alone. archive/tar
// reads a regular file's contents by passing its caller's reads down to the
// stream (never more than the entry has left), so it keeps its account of
// the entry, its padding and what follows, while the bytes go from the
// stream to the file without passing through this process's buffers. left
// bounds what may be moved, so nothing past the entry can land in the file.
type divertReader struct {
	r    io.Reader
	fs   FileSource // r, when it is one
	to   *os.File
	left int64
}

func (d *divertReader) Read(p []byte) (int, error) {
	if d.to == nil {
		return d.r.Read(p)
	}
	n := int(min(int64(len(p)), d.left))
	if n == 0 {
		return 0, errors.New("tar reader asked for more than the entry holds")
	}
	m, err := d.fs.ReadToFile(d.to, n)
	d.left -= int64(m)
	return m, err
}

// copyInto writes the contents of the current entry into f.
func (x *extractor) copyInto(f *os.File, tr *tar.Reader, hdr *tar.Header) error {
	if x.buf == nil {
		x.buf = make([]byte, copyBufSize)
	}
	if x.opts.Holes || sparse(hdr) {
		// Holes stay holes: a few bytes of sparse map must not make
		// this write out gigabytes of zeros.
		hw := &holeWriter{ctx: x.ctx, f: f}
		n, err := io.CopyBuffer(hw, tr, x.buf)
		if err == nil && n != hdr.Size {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			err = f.Truncate(hdr.Size)
		}
		return err
	}
	if x.src.fs == nil {
		// Hide the file's ReadFrom so the copy uses the large buffer.
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, tr, x.buf)
		if err == nil && n != hdr.Size {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return x.divert(f, tr, hdr)
}

// divert moves the entry's contents from the FileSource into f.
func (x *extractor) divert(f *os.File, tr *tar.Reader, hdr *tar.Header) error {
	x.src.to, x.src.left = f, hdr.Size
	defer func() { x.src.to = nil }()
	var n int64
	for {
		// x.buf only gives the read its size; its bytes go to f.
		m, err := tr.Read(x.buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if moved := hdr.Size - x.src.left; n != hdr.Size || moved != hdr.Size {
		return fmt.Errorf("only %d of its %d bytes reached the file", moved, hdr.Size)
	}
	return nil
}

// holeWriter writes to f from its start, seeking over blocks that are all
// zeros so that they become holes, and stops when ctx is done (archive/tar
// makes the zeros of a hole as fast as they are asked for).
type holeWriter struct {
	ctx context.Context
	f   *os.File
	off int64
}

func (h *holeWriter) Write(p []byte) (int, error) {
	if err := h.ctx.Err(); err != nil {
		return 0, err
	}
	// Write each run of non-zero blocks in one call; skip zero blocks.
	// Blocks are counted from the file's start, so a hole is whole blocks.
	for i := 0; i < len(p); {
		j := i
		for j < len(p) && !h.zero(p, j) {
			j = h.next(p, j)
		}
		if j > i {
			if _, err := h.f.WriteAt(p[i:j], h.off+int64(i)); err != nil {
				return i, err
			}
		}
		for j < len(p) && h.zero(p, j) {
			j = h.next(p, j)
		}
		i = j
	}
	h.off += int64(len(p))
	return len(p), nil
}

// next is the end of the block of p that starts at i.
func (h *holeWriter) next(p []byte, i int) int {
	end := int((h.off+int64(i))/holeBlock+1)*holeBlock - int(h.off)
	return min(end, len(p))
}

// zero reports whether the block of p that starts at i is all zeros.
func (h *holeWriter) zero(p []byte, i int) bool {
	b := p[i:h.next(p, i)]
	return bytes.Equal(b, zeroBlock[:len(b)])
}

// sparse reports whether hdr is a sparse file, whose contents archive/tar
// reassembles from pieces and holes: those cannot be diverted.
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
