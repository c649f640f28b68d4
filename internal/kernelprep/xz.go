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

// xzDecode decodes the first .xz stream in src. Data after that stream's
// blocks (its index, footer, and anything beyond) is ignored.
func xzDecode(src []byte, limit int64) ([]byte, error) {
	if len(src) < 12 || !bytes.Equal(src[:6], []byte(magicXZ)) {
		return nil, errors.New("xz: missing stream header")
	}
	flags := src[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(src[8:12]) {
		return nil, errors.New("xz: stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1]&0xF0 != 0 {
		return nil, errors.New("xz: unsupported stream flags")
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
		return nil, fmt.Errorf("xz: unsupported check type %#x", checkType)
	}
	pos := 12
	var out []byte
	for {
		if pos >= len(src) {
			return nil, errors.New("xz: truncated stream (no index)")
		}
		if src[pos] == 0 { // index indicator: all blocks done
			return out, nil
		}
		block, n, err := xzBlock(src[pos:], limit-int64(len(out)))
		if err != nil {
			return nil, err
		}
		pos += n
		if newHash != nil {
			if pos+checkLen > len(src) {
				return nil, errors.New("xz: truncated block check")
			}
			h := newHash()
			h.Write(block)
			sum := h.Sum(nil)
			if checkType == 0x01 || checkType == 0x04 { // CRCs are stored little-endian
				for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
					sum[i], sum[j] = sum[j], sum[i]
				}
			}
			if !bytes.Equal(sum, src[pos:pos+checkLen]) {
				return nil, errors.New("xz: block check mismatch (corrupt data)")
			}
		}
		pos += checkLen
		out = append(out, block...)
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

// xzBlock decodes one block starting at b[0] (its header size byte) and
// returns the data and the bytes consumed up to, not including, the check.
func xzBlock(b []byte, limit int64) ([]byte, int, error) {
	hdrLen := (int(b[0]) + 1) * 4
	if hdrLen > len(b) {
		return nil, 0, errors.New("xz: truncated block header")
	}
	hdr := b[:hdrLen]
	if crc32.ChecksumIEEE(hdr[:hdrLen-4]) != binary.LittleEndian.Uint32(hdr[hdrLen-4:]) {
		return nil, 0, errors.New("xz: block header CRC mismatch")
	}
	bflags := hdr[1]
	if bflags&0x3C != 0 {
		return nil, 0, errors.New("xz: unsupported block flags")
	}
	nfilters := int(bflags&3) + 1
	p := 2
	compSize, uncompSize := int64(-1), int64(-1)
	body := hdr[:hdrLen-4]
	if bflags&0x40 != 0 {
		v, n, err := xzVarint(body[p:])
		if err != nil {
			return nil, 0, err
		}
		compSize, p = int64(v), p+n
	}
	if bflags&0x80 != 0 {
		v, n, err := xzVarint(body[p:])
		if err != nil {
			return nil, 0, err
		}
		uncompSize, p = int64(v), p+n
	}
	useX86 := false
	x86Start := uint32(0)
	dictCap := 0
	for i := 0; i < nfilters; i++ {
		id, n, err := xzVarint(body[p:])
		if err != nil {
			return nil, 0, err
		}
		p += n
		psize, n, err := xzVarint(body[p:])
		if err != nil {
			return nil, 0, err
		}
		p += n
		if psize > uint64(len(body)-p) {
			return nil, 0, errors.New("xz: truncated filter properties")
		}
		props := body[p : p+int(psize)]
		p += int(psize)
		last := i == nfilters-1
		switch {
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return nil, 0, errors.New("xz: bad LZMA2 properties")
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
				return nil, 0, errors.New("xz: bad x86 filter properties")
			}
		default:
			return nil, 0, fmt.Errorf("xz: unsupported filter %#x (only x86 BCJ followed by LZMA2 is supported)", id)
		}
	}
	for _, c := range body[p:] {
		if c != 0 {
			return nil, 0, errors.New("xz: non-zero block header padding")
		}
	}
	rest := b[hdrLen:]
	if compSize >= 0 {
		if compSize > int64(len(rest)) {
			return nil, 0, errors.New("xz: truncated block data")
		}
		rest = rest[:compSize]
	}
	br := bytes.NewReader(rest)
	lr, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(br)
	if err != nil {
		return nil, 0, fmt.Errorf("xz: %w", err)
	}
	var buf bytes.Buffer
	if uncompSize > 0 {
		buf.Grow(int(min(uncompSize, limit)))
	}
	n, err := io.Copy(&buf, io.LimitReader(lr, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("xz: %w", err)
	}
	if n > limit {
		return nil, 0, fmt.Errorf("xz: output exceeds %d bytes", limit)
	}
	if uncompSize >= 0 && n != uncompSize {
		return nil, 0, errors.New("xz: block size does not match its header")
	}
	used := len(rest) - br.Len()
	if compSize >= 0 && int64(used) != compSize {
		return nil, 0, errors.New("xz: compressed size does not match the block header")
	}
	out := buf.Bytes()
	if useX86 {
		bcjX86Decode(out, x86Start)
	}
	consumed := hdrLen + used
	consumed += (4 - used%4) % 4 // block padding
	if consumed > len(b) {
		return nil, 0, errors.New("xz: truncated block padding")
	}
	return out, consumed, nil
}

// bcjX86Decode undoes the x86 branch-call-jump filter in place: the encoder
// turned the relative targets of E8 (call) and E9 (jmp) instructions into
// absolute ones to help compression; here they become relative again. The
// whole buffer is processed in one go, so no state carries over.
func bcjX86Decode(buf []byte, startPos uint32) {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msByte := func(b byte) bool { return b == 0x00 || b == 0xFF }
	if len(buf) <= 4 {
		return
	}
	end := len(buf) - 4
	prevPos := -1
	prevMask := uint32(0)
	for i := 0; i < end; i++ {
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
			dest = src - (startPos + uint32(i) + 5)
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
}
