package kernelprep

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// testELF returns a small but complete x86_64 executable ELF image: one
// PT_LOAD segment of n bytes that look like code (many E8/E9 call and jump
// opcodes, so the x86 BCJ filter has work to do).
func testELF(t testing.TB, n int, machine elf.Machine) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(n)))
	body := make([]byte, n)
	for i := 0; i < n; {
		switch rng.Intn(4) {
		case 0: // call rel32 with a small (0x00 or 0xFF high byte) offset
			if i+5 > n {
				i = n
				continue
			}
			body[i] = 0xE8 + byte(rng.Intn(2))
			binary.LittleEndian.PutUint32(body[i+1:], uint32(int32(rng.Intn(1<<20)-1<<19)))
			i += 5
		default:
			body[i] = byte("push rbp; mov rsp, rbp"[rng.Intn(20)])
			i++
		}
	}
	const ehsize, phsize = 64, 56
	var b bytes.Buffer
	hdr := make([]byte, ehsize)
	copy(hdr, "\x7fELF")
	hdr[4], hdr[5], hdr[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(hdr[16:], uint16(elf.ET_EXEC))
	le.PutUint16(hdr[18:], uint16(machine))
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[24:], 0x1000000+ehsize+phsize) // entry
	le.PutUint64(hdr[32:], ehsize)                  // phoff
	le.PutUint16(hdr[52:], ehsize)
	le.PutUint16(hdr[54:], phsize)
	le.PutUint16(hdr[56:], 1) // phnum
	b.Write(hdr)
	ph := make([]byte, phsize)
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(ph[8:], 0)
	le.PutUint64(ph[16:], 0x1000000)
	le.PutUint64(ph[24:], 0x1000000)
	le.PutUint64(ph[32:], uint64(ehsize+phsize+n))
	le.PutUint64(ph[40:], uint64(ehsize+phsize+n))
	le.PutUint64(ph[48:], 0x1000)
	b.Write(ph)
	b.Write(body)
	return b.Bytes()
}

// testKO returns a minimal relocatable ELF with a .modinfo section holding
// the given key=value strings, like a kernel module.
func testKO(t testing.TB, modinfo ...string) []byte {
	t.Helper()
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	le := binary.LittleEndian
	const ehsize, shsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(info)
	shOff := (strOff + len(shstr) + 7) &^ 7
	out := make([]byte, shOff+3*shsize)
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = 2, 1, 1
	le.PutUint16(out[16:], uint16(elf.ET_REL))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shOff))
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[58:], shsize)
	le.PutUint16(out[60:], 3) // shnum
	le.PutUint16(out[62:], 2) // shstrndx
	copy(out[infoOff:], info)
	copy(out[strOff:], shstr)
	sec := func(i int, name uint32, typ elf.SectionType, off, size int) {
		s := out[shOff+i*shsize:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], uint32(typ))
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
	}
	sec(1, 1, elf.SHT_PROGBITS, infoOff, len(info))
	sec(2, 10, elf.SHT_STRTAB, strOff, len(shstr))
	return out
}

// fakeMod describes a module for writeModules.
type fakeMod struct {
	file    string // path under the modules dir, e.g. kernel/a/x.ko.xz
	modinfo []string
}

func mod(file string, deps string, extra ...string) fakeMod {
	name := moduleName(file)
	return fakeMod{file, append([]string{"name=" + name, "depends=" + deps, "license=GPL"}, extra...)}
}

// writeModules writes fake modules (compressed by their suffix) into dir.
func writeModules(t testing.TB, dir string, mods ...fakeMod) {
	t.Helper()
	for _, m := range mods {
		p := filepath.Join(dir, m.file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := compressAs(t, filepath.Ext(m.file), testKO(t, m.modinfo...))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func compressAs(t testing.TB, ext string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case ".ko", "":
		return data
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	default:
		t.Fatalf("unknown compression %q", ext)
	}
	return b.Bytes()
}

// bzImage wraps a compressed payload like an x86 bzImage: setup sectors
// with a boot protocol header, a fake decompressor, the payload followed by
// its uncompressed size, then more fake code. With header false the
// protocol version predates payload_offset, so the payload must be found by
// scanning.
func bzImage(payload []byte, rawLen int, header bool) []byte {
	const setupSects = 4
	pm := (setupSects + 1) * 512
	const payloadOff = 0x2f0
	img := make([]byte, pm+payloadOff)
	for i := range img {
		img[i] = 0x90
	}
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	le := binary.LittleEndian
	if header {
		le.PutUint16(img[0x206:], 0x020f)
		le.PutUint32(img[0x248:], payloadOff)
		le.PutUint32(img[0x24c:], uint32(len(payload)+4))
	} else {
		le.PutUint16(img[0x206:], 0x0206)
	}
	img = append(img, payload...)
	img = le.AppendUint32(img, uint32(rawLen))
	return append(img, bytes.Repeat([]byte{0xCC, 0x1f, 0x8b}, 700)...) // junk, with near-magics
}

// debEntry is one file in a test .deb's data.tar.
type debEntry struct {
	name     string
	typ      byte
	data     []byte
	linkname string
}

// buildDeb writes a .deb (ar: debian-binary, control.tar.gz, data.tar.<comp>).
func buildDeb(t testing.TB, path, comp string, entries []debEntry) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.linkname, ModTime: time.Unix(0, 0)}
		if e.typ == tar.TypeDir {
			h.Mode, h.Size = 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	data := compressAs(t, "."+comp, tb.Bytes())
	var ctl bytes.Buffer
	cw := tar.NewWriter(&ctl)
	cw.WriteHeader(&tar.Header{Name: "./control", Mode: 0o644, Size: 5})
	cw.Write([]byte("hello"))
	cw.Close()
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, body []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(body))
		ar.Write(body)
		if len(body)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", compressAs(t, ".gz", ctl.Bytes()))
	member("data.tar."+comp, data)
	if err := os.WriteFile(path, ar.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// gzipped compresses data with gzip.
func gzipped(t testing.TB, data []byte) []byte { return compressAs(t, ".gz", data) }
