package filekind

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// newcHeaderLen is the length of a newc cpio header: a 6-byte magic and 13
// fields of 8 hex digits.
const newcHeaderLen = 6 + 13*8

// lz4LegacyBlock is the most a block of the lz4 legacy frame (the one the
// kernel reads) holds uncompressed.
const lz4LegacyBlock = 8 << 20

// maxWindow bounds the memory a decoder may ask for while sniffing.
const maxWindow = 64 << 20

type compression struct {
	name  string
	magic string
	open  func(io.Reader) (io.Reader, error)
}

// compressions are the formats the kernel's initramfs unpacker reads (lzo
// aside, which nothing banger supports makes).
var compressions = []compression{
	{"gzip", "\x1f\x8b", func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
	{"zstd", "\x28\xb5\x2f\xfd", func(r io.Reader) (io.Reader, error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxWindow), zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}},
	{"xz", "\xfd7zXZ\x00", func(r io.Reader) (io.Reader, error) {
		return xz.ReaderConfig{DictCap: maxWindow}.NewReader(r)
	}},
	{"bzip2", "BZh", func(r io.Reader) (io.Reader, error) { return bzip2.NewReader(r), nil }},
	{"lz4", "\x02\x21\x4c\x18", openLZ4Legacy},
	{"lzma", "\x5d\x00\x00", func(r io.Reader) (io.Reader, error) {
		return lzma.ReaderConfig{DictCap: maxWindow}.NewReader(r)
	}},
}

// Initrd checks that r starts an initrd the kernel can unpack: a newc cpio
// archive ("070701" or "070702" headers), bare or compressed with gzip,
// zstd, xz, lzma, bzip2 or lz4 (legacy frame). It decompresses only as far
// as the first header. It returns "cpio" or the compression's name. The
// error says what is wrong, in words that fit in "it is not an initrd (...)".
func Initrd(r io.Reader) (string, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(newcHeaderLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read its first bytes: %w", err)
	}
	if len(head) == 0 {
		return "", errors.New("the file is empty")
	}
	if isNewcMagic(head) {
		if err := checkNewcHeader(head); err != nil {
			return "", err
		}
		return "cpio", nil
	}
	for _, c := range compressions {
		if !bytes.HasPrefix(head, []byte(c.magic)) {
			continue
		}
		zr, err := c.open(br)
		if err != nil {
			return "", fmt.Errorf("it starts as %s data but does not decompress: %v", c.name, err)
		}
		if cl, ok := zr.(io.Closer); ok {
			defer cl.Close()
		}
		hdr := make([]byte, newcHeaderLen)
		n, err := io.ReadFull(zr, hdr)
		if err != nil && n == 0 {
			return "", fmt.Errorf("%s data that does not decompress: %v", c.name, err)
		}
		if !isNewcMagic(hdr[:n]) {
			return "", fmt.Errorf("%s data, but what it holds is not a newc cpio archive", c.name)
		}
		if err := checkNewcHeader(hdr[:n]); err != nil {
			return "", fmt.Errorf("%s data holding a damaged cpio archive: %w", c.name, err)
		}
		return c.name, nil
	}
	return "", errors.New("neither a newc cpio archive nor one compressed with gzip, zstd, xz, lzma, bzip2 or lz4")
}

func isNewcMagic(b []byte) bool {
	return len(b) >= 6 && (string(b[:6]) == "070701" || string(b[:6]) == "070702")
}

// checkNewcHeader checks that a newc header is whole and its fields are hex.
func checkNewcHeader(h []byte) error {
	if len(h) < newcHeaderLen {
		return fmt.Errorf("its first cpio header is truncated (%d of %d bytes)", len(h), newcHeaderLen)
	}
	for i, c := range h[6:newcHeaderLen] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return fmt.Errorf("its first cpio header has a non-hex byte %q at offset %d", c, 6+i)
		}
	}
	return nil
}

// openLZ4Legacy decodes the first block of an lz4 legacy frame: the magic,
// a 4-byte little-endian compressed size, the block.
func openLZ4Legacy(r io.Reader) (io.Reader, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[4:])
	if n == 0 || n > uint32(lz4.CompressBlockBound(lz4LegacyBlock)) {
		return nil, fmt.Errorf("first block size %d is out of range", n)
	}
	src := make([]byte, n)
	if _, err := io.ReadFull(r, src); err != nil {
		return nil, err
	}
	dst := make([]byte, lz4LegacyBlock)
	k, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(dst[:k]), nil
}
