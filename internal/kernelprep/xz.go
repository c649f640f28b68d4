package kernelprep

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel compresses x86 images with "xz --x86", i.e. a BCJ x86 filter in
// front of LZMA2, which the xz package we use does not decode. This file is a
// small in-memory .xz decoder for one stream of blocks whose filter chain is
// an optional BCJ x86 filter followed by LZMA2.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzDecode decodes the first .xz stream in src into w, at most limit
// bytes, as it goes. Data after that stream's blocks (its index, footer,
// and anything beyond) is ignored. On error, what was written is not to be
// used: a block's check is verified only after its data went out.
func xzDecode(src []byte, w io.Writer, limit int64) error {
	if len(src) < 12 || !bytes.Equal(src[:6], []byte(magicXZ)) {
		return errors.New("xz: missing stream header")
	}
	flags := src[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(src[8:12]) {
		return errors.New("xz: stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1]&0xF0 != 0 {
		return errors.New("xz: unsupported stream flags")
	}
	checkType := flags[1] & 0x0F
	var checkLen int
	var newHash func() hash.Hash
	switch checkType {
	case 0x00:
	case 0x01:
		checkLen, newHash = 4, func() hash.Hash { return crc32.NewIEEE() }
	case 0x04:
		checkLen, newHash = 8, func() hash.Hash { return crc64.New(crc64Table) }
	case 0x0A:
		checkLen, newHash = 32, sha256.New
	default:
		return fmt.Errorf("xz: unsupported check type %#x", checkType)
	}
	pos := 12
	written := int64(0)
	for {
		if pos >= len(src) {
			return errors.New("xz: truncated stream (no index)")
		}
		if src[pos] == 0 { // index indicator: all blocks done
			return nil
		}
		var h hash.Hash
		bw := w
		if newHash != nil {
			h = newHash()
			bw = io.MultiWriter(w, h)
		}
		n, wrote, err := xzBlock(src[pos:], bw, limit-written)
		if err != nil {
			return err
		}
		pos += n
		written += wrote
		if h != nil {
			if pos+checkLen > len(src) {
				return errors.New("xz: truncated block check")
			}
			sum := h.Sum(nil)
			if checkType == 0x01 || checkType == 0x04 { // CRCs are stored little-endian
				for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
					sum[i], sum[j] = sum[j], sum[i]
				}
			}
			if !bytes.Equal(sum, src[pos:pos+checkLen]) {
				return errors.New("xz: block check mismatch (corrupt data)")
			}
		}
		pos += checkLen
	}
}

func xzVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("xz: bad variable-length integer")
}

// xzBlock decodes one block starting at b[0] (its header size byte) into
// w and returns the bytes consumed up to, not including, the check, and
// the bytes written.
func xzBlock(b []byte, w io.Writer, limit int64) (int, int64, error) {
	hdrLen := (int(b[0]) + 1) * 4
	if hdrLen > len(b) {
		return 0, 0, errors.New("xz: truncated block header")
	}
	hdr := b[:hdrLen]
	if crc32.ChecksumIEEE(hdr[:hdrLen-4]) != binary.LittleEndian.Uint32(hdr[hdrLen-4:]) {
		return 0, 0, errors.New("xz: block header CRC mismatch")
	}
	bflags := hdr[1]
	if bflags&0x3C != 0 {
		return 0, 0, errors.New("xz: unsupported block flags")
	}
	nfilters := int(bflags&3) + 1
	p := 2
	compSize, uncompSize := int64(-1), int64(-1)
	body := hdr[:hdrLen-4]
	if bflags&0x40 != 0 {
		v, n, err := xzVarint(body[p:])
		if err != nil {
			return 0, 0, err
		}
		compSize, p = int64(v), p+n
	}
	if bflags&0x80 != 0 {
		v, n, err := xzVarint(body[p:])
		if err != nil {
			return 0, 0, err
		}
		uncompSize, p = int64(v), p+n
	}
	useX86 := false
	x86Start := uint32(0)
	dictCap := 0
	for i := 0; i < nfilters; i++ {
		id, n, err := xzVarint(body[p:])
		if err != nil {
			return 0, 0, err
		}
		p += n
		psize, n, err := xzVarint(body[p:])
		if err != nil {
			return 0, 0, err
		}
		p += n
		if psize > uint64(len(body)-p) {
			return 0, 0, errors.New("xz: truncated filter properties")
		}
		props := body[p : p+int(psize)]
		p += int(psize)
		last := i == nfilters-1
		switch {
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return 0, 0, errors.New("xz: bad LZMA2 properties")
			}
			bits := uint(props[0])
			if bits == 40 {
				dictCap = 1<<31 - 1
			} else {
				dictCap = (2 | int(bits&1)) << (bits/2 + 11)
			}
			// References never reach further back than the output is
			// long, so a dictionary beyond the output limit is not needed.
			dictCap = max(min(dictCap, int(min(limit, maxDictCap))), lzma.MinDictCap)
		case id == xzFilterX86 && !last && !useX86:
			useX86 = true
			switch len(props) {
			case 0:
			case 4:
				x86Start = binary.LittleEndian.Uint32(props)
			default:
				return 0, 0, errors.New("xz: bad x86 filter properties")
			}
		default:
			return 0, 0, fmt.Errorf("xz: unsupported filter %#x (only x86 BCJ followed by LZMA2 is supported)", id)
		}
	}
	for _, c := range body[p:] {
		if c != 0 {
			return 0, 0, errors.New("xz: non-zero block header padding")
		}
	}
	rest := b[hdrLen:]
	if compSize >= 0 {
		if compSize > int64(len(rest)) {
			return 0, 0, errors.New("xz: truncated block data")
		}
		rest = rest[:compSize]
	}
	br := bytes.NewReader(rest)
	lr, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(br)
	if err != nil {
		return 0, 0, fmt.Errorf("xz: %w", err)
	}
	var dst io.Writer = w
	var bcj *bcjX86Writer
	if useX86 {
		bcj = &bcjX86Writer{w: w, f: bcjX86{pos: x86Start}}
		dst = bcj
	}
	n, err := io.Copy(dst, io.LimitReader(lr, limit+1))
	if err != nil {
		return 0, 0, fmt.Errorf("xz: %w", err)
	}
	if n > limit {
		return 0, 0, fmt.Errorf("xz: output exceeds %d bytes", limit)
	}
	if bcj != nil {
		if err := bcj.Close(); err != nil {
			return 0, 0, fmt.Errorf("xz: %w", err)
		}
	}
	if uncompSize >= 0 && n != uncompSize {
		return 0, 0, errors.New("xz: block size does not match its header")
	}
	used := len(rest) - br.Len()
	if compSize >= 0 && int64(used) != compSize {
		return 0, 0, errors.New("xz: compressed size does not match the block header")
	}
	consumed := hdrLen + used
	consumed += (4 - used%4) % 4 // block padding
	if consumed > len(b) {
		return 0, 0, errors.New("xz: truncated block padding")
	}
	return consumed, n, nil
}

// bcjX86Decode undoes the x86 branch-call-jump filter in place on a whole
// buffer that starts at stream position startPos.
func bcjX86Decode(buf []byte, startPos uint32) {
	f := bcjX86{pos: startPos}
	f.filter(buf)
}

// bcjX86 undoes the x86 branch-call-jump filter: the encoder turned the
// relative targets of E8 (call) and E9 (jmp) instructions into absolute
// ones to help compression; here they become relative again. It works on
// a stream in pieces: filter converts what it can of a buffer and returns
// how many leading bytes are final; the rest (at most 4 bytes, an
// instruction that may be cut) must be passed again, at the start of the
// next buffer. The state carried between pieces is what the
// one-buffer-at-once algorithm keeps in its loop.
type bcjX86 struct {
	pos      uint32 // stream position of the next buffer's first byte
	prevPos  int    // position of the last E8/E9 relative to that byte; < -3 when none near
	prevMask uint32
	started  bool
}

func (f *bcjX86) filter(buf []byte) int {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msByte := func(b byte) bool { return b == 0x00 || b == 0xFF }
	if !f.started {
		f.prevPos, f.started = -1, true
	}
	if len(buf) <= 4 {
		return 0
	}
	end := len(buf) - 4
	prevPos, prevMask := f.prevPos, f.prevMask
	i := 0
	for ; i < end; i++ {
		if buf[i]&0xFE != 0xE8 {
			continue
		}
		dist := i - prevPos
		if dist > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(dist-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (f.pos + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01FFFFFF
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
	// i is the first byte not looked at; positions become relative to it.
	f.prevPos = max(prevPos-i, -4)
	f.prevMask = prevMask
	f.pos += uint32(i)
	return i
}

// bcjX86Writer runs the filter over a stream written to it and passes the
// result to w; Close passes on the last bytes, which the filter leaves
// alone as the whole-buffer algorithm does.
type bcjX86Writer struct {
	w   io.Writer
	f   bcjX86
	buf []byte
}

func (b *bcjX86Writer) Write(p []byte) (int, error) {
	if b.buf == nil {
		b.buf = make([]byte, 0, 256<<10)
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(b.buf)-len(b.buf))
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
		if len(b.buf) < cap(b.buf) {
			break
		}
		done := b.f.filter(b.buf)
		if _, err := b.w.Write(b.buf[:done]); err != nil {
			return 0, err
		}
		b.buf = b.buf[:copy(b.buf, b.buf[done:])]
	}
	return n, nil
}

// Close filters and writes what is left.
func (b *bcjX86Writer) Close() error {
	done := b.f.filter(b.buf)
	if _, err := b.w.Write(b.buf[:done]); err != nil {
		return err
	}
	_, err := b.w.Write(b.buf[done:])
	b.buf = b.buf[:0]
	return err
}
