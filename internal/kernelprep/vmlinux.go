package kernelprep

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// MaxVmlinuxSize bounds the decompressed kernel, so a corrupt or hostile
// image cannot exhaust memory.
const MaxVmlinuxSize = 1 << 30

const (
	magicGzip  = "\x1f\x8b\x08"
	magicXZ    = "\xfd7zXZ\x00"
	magicZstd  = "\x28\xb5\x2f\xfd"
	magicLZ4   = "\x02\x21\x4c\x18" // lz4 legacy frame, as the kernel writes it
	magicBzip2 = "BZh"
	magicLZMA  = "\x5d\x00\x00"
	magicELF   = "\x7fELF"

	lz4LegacyBlock = 8 << 20
	maxDictCap     = 256 << 20 // kernels use 32 MiB (xz) or 64 MiB (lzma -9)
	maxCandidates  = 64
)

type payloadFormat struct {
	name  string
	magic string
	// dec writes the decoded payload to w, at most limit bytes.
	dec func(src []byte, w io.Writer, limit int64) error
	// strict: an error means the output is not to be used even when it
	// happens to be a complete ELF file (xz checks every block).
	strict bool
}

var payloadFormats = []payloadFormat{
	{"gzip", magicGzip, decodeGzip, false},
	{"xz", magicXZ, xzDecode, true},
	{"zstd", magicZstd, decodeZstd, false},
	{"lz4", magicLZ4, decodeLZ4Legacy, false},
	{"bzip2", magicBzip2, decodeBzip2, false},
	{"lzma", magicLZMA, decodeLZMA, false},
}

func formatNames() string {
	var n []string
	for _, f := range payloadFormats {
		n = append(n, f.name)
	}
	return strings.Join(n, ", ")
}

// ExtractVmlinuxFile reads a kernel image file and returns the uncompressed
// vmlinux; see ExtractVmlinux. WriteVmlinuxFile does the same without
// holding the result in memory.
func ExtractVmlinuxFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading kernel image: %w", err)
	}
	v, err := ExtractVmlinux(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// WriteVmlinuxFile decodes the kernel image at imagePath (see
// ExtractVmlinux) into a new file dst, created with mode 0644 and flushed
// to disk. The decoded kernel streams to dst: memory holds the compressed
// image, the decompressor's window and a few small buffers, never the
// whole vmlinux. On failure dst is removed.
func WriteVmlinuxFile(imagePath, dst string) (err error) {
	image, err := os.ReadFile(imagePath)
	if err != nil {
		return fmt.Errorf("reading kernel image: %w", err)
	}
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("writing the kernel: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing the kernel %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	fs := &fileSink{f: f}
	if err := extractVmlinuxTo(image, fs, MaxVmlinuxSize); err != nil {
		return fmt.Errorf("%s: %w", imagePath, err)
	}
	if err := fs.flush(); err != nil {
		return fmt.Errorf("writing the kernel %s: %w", dst, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing the kernel %s: %w", dst, err)
	}
	return nil
}

// ExtractVmlinux returns the uncompressed x86_64 ELF kernel inside an x86
// bzImage. The compressed payload is located through the boot protocol's
// payload_offset/payload_length fields (protocol 2.08 and later), or else by
// scanning for compression magics; gzip, xz (with the x86 BCJ filter), zstd,
// lz4 (legacy frame), bzip2 and lzma payloads are decoded in pure Go. An
// image that already is an x86_64 ELF file is returned unchanged.
func ExtractVmlinux(image []byte) ([]byte, error) {
	return extractVmlinux(image, MaxVmlinuxSize)
}

func extractVmlinux(image []byte, limit int64) ([]byte, error) {
	if bytes.HasPrefix(image, []byte(magicELF)) {
		if err := checkVmlinux(bytes.NewReader(image), int64(len(image))); err != nil {
			return nil, err
		}
		return image, nil
	}
	var m memSink
	if err := extractVmlinuxTo(image, &m, limit); err != nil {
		return nil, err
	}
	return m.b, nil
}

func extractVmlinuxTo(image []byte, out sink, limit int64) error {
	if bytes.HasPrefix(image, []byte(magicELF)) {
		if err := checkVmlinux(bytes.NewReader(image), int64(len(image))); err != nil {
			return err
		}
		_, err := out.Write(image)
		return err
	}
	var errs []string
	if payload, ok := bootPayload(image); ok {
		for _, f := range payloadFormats {
			if !bytes.HasPrefix(payload, []byte(f.magic)) {
				continue
			}
			err := decodePayload(f, payload, out, limit)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Sprintf("%s payload at the boot header's payload_offset: %v", f.name, err))
		}
		if len(errs) == 0 {
			errs = append(errs, fmt.Sprintf("payload at the boot header's payload_offset starts with % x, a format banger cannot decode (lzo?)", payload[:min(len(payload), 4)]))
		}
	}
	// Scan for magics: older images, or a header we could not use.
	tried := 0
	for off := 0; off < len(image) && tried < maxCandidates; off++ {
		for _, f := range payloadFormats {
			if !bytes.HasPrefix(image[off:], []byte(f.magic)) {
				continue
			}
			tried++
			err := decodePayload(f, image[off:], out, limit)
			if err == nil {
				return nil
			}
			if len(errs) < 8 {
				errs = append(errs, fmt.Sprintf("%s at offset %d: %v", f.name, off, err))
			}
		}
	}
	msg := fmt.Sprintf("no supported compressed payload found in the kernel image (formats tried: %s)", formatNames())
	if len(errs) > 0 {
		msg += "; " + strings.Join(errs, "; ")
	}
	return errors.New(msg + "; pass a bzImage or vmlinux for x86_64")
}

// bootPayload returns the compressed payload named by the x86 boot protocol
// header, with the 4-byte uncompressed size the kernel build appends still
// on its end.
func bootPayload(image []byte) ([]byte, bool) {
	if len(image) < 0x250 || string(image[0x202:0x206]) != "HdrS" {
		return nil, false
	}
	if binary.LittleEndian.Uint16(image[0x206:]) < 0x208 {
		return nil, false
	}
	setupSects := int(image[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(image[0x248:]))
	length := int(binary.LittleEndian.Uint32(image[0x24c:]))
	if length == 0 || start < 0 || start >= len(image) || length > len(image)-start {
		return nil, false
	}
	return image[start : start+length], true
}

// decodePayload decodes one candidate payload into out (emptied first)
// and checks the result is a complete x86_64 ELF. Decoders stop at the end
// of their stream where they can; where trailing bytes (the appended size,
// the rest of the image) make one report an error after it produced
// output, that output is still accepted when it is a complete ELF file,
// except for strict formats.
func decodePayload(f payloadFormat, src []byte, out sink, limit int64) error {
	if err := out.reset(); err != nil {
		return err
	}
	err := f.dec(src, &limitWriter{w: out, n: limit}, limit)
	if err != nil && f.strict {
		return err
	}
	if ferr := out.flush(); ferr != nil {
		return ferr
	}
	if out.size() == 0 {
		if err == nil {
			err = errors.New("decoded to nothing")
		}
		return err
	}
	if cerr := checkVmlinux(out, out.size()); cerr != nil {
		if err != nil {
			return err
		}
		return cerr
	}
	return nil
}

// checkVmlinux verifies that the size bytes of r are a whole 64-bit x86
// ELF file: its headers parse and every loadable segment lies within it.
func checkVmlinux(r io.ReaderAt, size int64) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("decoded kernel is not a valid ELF file: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("kernel is a %v %v ELF file, banger needs ELFCLASS64 EM_X86_64", f.Class, f.Machine)
	}
	if len(f.Progs) == 0 {
		return errors.New("kernel ELF file has no program headers")
	}
	for _, p := range f.Progs {
		if p.Off+p.Filesz > uint64(size) || p.Off+p.Filesz < p.Off {
			return fmt.Errorf("kernel ELF segment at offset %d (%d bytes) runs past the end of the file (%d bytes): truncated", p.Off, p.Filesz, size)
		}
	}
	return nil
}

// errTooLarge is limitWriter's error past its limit.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("output exceeds %d bytes", e.limit) }

// limitWriter passes at most n bytes on to w and fails on more.
type limitWriter struct {
	w     io.Writer
	n     int64
	wrote int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.wrote+int64(len(p)) > l.n {
		return 0, errTooLarge{l.n}
	}
	k, err := l.w.Write(p)
	l.wrote += int64(k)
	return k, err
}

// copyOut copies a decoder's output to w (a limitWriter).
func copyOut(w io.Writer, r io.Reader) error {
	_, err := io.Copy(w, r)
	return err
}

func decodeGzip(src []byte, w io.Writer, _ int64) error {
	zr, err := gzip.NewReader(bytes.NewReader(src))
	if err != nil {
		return err
	}
	zr.Multistream(false)
	return copyOut(w, zr)
}

func decodeZstd(src []byte, w io.Writer, limit int64) error {
	d, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(limit)), zstd.WithDecoderMaxWindow(maxDictCap))
	if err != nil {
		return err
	}
	defer d.Close()
	return copyOut(w, d)
}

func decodeBzip2(src []byte, w io.Writer, _ int64) error {
	return copyOut(w, bzip2.NewReader(bytes.NewReader(src)))
}

func decodeLZMA(src []byte, w io.Writer, limit int64) error {
	zr, err := lzma.ReaderConfig{DictCap: int(min(limit, maxDictCap))}.NewReader(bytes.NewReader(src))
	if err != nil {
		return err
	}
	return copyOut(w, zr)
}

// decodeLZ4Legacy decodes the lz4 legacy frame: a magic, then blocks of
// (4-byte little-endian compressed size, data), each at most 8 MiB
// uncompressed. The kernel build appends the uncompressed size after the
// last block; a size word that cannot be a block ends the frame, as does a
// repeated magic (concatenated frames continue).
func decodeLZ4Legacy(src []byte, w io.Writer, _ int64) error {
	if !bytes.HasPrefix(src, []byte(magicLZ4)) {
		return errors.New("missing lz4 legacy magic")
	}
	bound := uint32(lz4.CompressBlockBound(lz4LegacyBlock))
	block := make([]byte, lz4LegacyBlock)
	pos, blocks := 4, 0
	for pos+4 <= len(src) {
		n := binary.LittleEndian.Uint32(src[pos:])
		if n == binary.LittleEndian.Uint32([]byte(magicLZ4)) {
			pos += 4
			continue
		}
		if n == 0 || n > bound || int(n) > len(src)-pos-4 {
			break
		}
		k, err := lz4.UncompressBlock(src[pos+4:pos+4+int(n)], block)
		if err != nil {
			// What came before may be the whole kernel followed by
			// unrelated bytes; decodePayload decides.
			return fmt.Errorf("lz4 block at offset %d: %w", pos, err)
		}
		if _, err := w.Write(block[:k]); err != nil {
			return err
		}
		blocks++
		pos += 4 + int(n)
	}
	if blocks == 0 {
		return errors.New("lz4 legacy frame holds no blocks")
	}
	return nil
}

// readLimited copies r into memory, failing beyond limit bytes; it returns
// what it read so far along with any error.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, limit+1))
	if n > limit {
		return nil, fmt.Errorf("output exceeds %d bytes", limit)
	}
	return buf.Bytes(), err
}
