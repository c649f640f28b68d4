package kernelprep

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// lz4Legacy encodes data as the lz4 legacy frame, in chunks of chunk bytes.
func lz4Legacy(t testing.TB, data []byte, chunk int) []byte {
	t.Helper()
	out := []byte(magicLZ4)
	buf := make([]byte, lz4.CompressBlockBound(chunk))
	for len(data) > 0 {
		n := min(chunk, len(data))
		k, err := lz4.CompressBlock(data[:n], buf, nil)
		if err != nil || k == 0 {
			t.Fatalf("lz4 compress: %d, %v", k, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(k))
		out = append(out, buf[:k]...)
		data = data[n:]
	}
	return out
}

// runTool compresses data with an external program, skipping when it is
// not installed.
func runTool(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (apt package %s); skipping this format's check against the real tool", name, name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

func TestExtractVmlinuxFormats(t *testing.T) {
	raw := testELF(t, 300_000, elf.EM_X86_64)
	compressors := map[string]func(t *testing.T) []byte{
		"gzip": func(t *testing.T) []byte {
			var b bytes.Buffer
			w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			w.Write(raw)
			w.Close()
			return b.Bytes()
		},
		"xz": func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(raw)
			w.Close()
			return b.Bytes()
		},
		"zstd": func(t *testing.T) []byte {
			var b bytes.Buffer
			w, _ := zstd.NewWriter(&b)
			w.Write(raw)
			w.Close()
			return b.Bytes()
		},
		"lz4-legacy": func(t *testing.T) []byte { return lz4Legacy(t, raw, 64<<10) },
		"lzma": func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := lzma.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(raw)
			w.Close()
			return b.Bytes()
		},
		// The kernel's own recipes (scripts/Makefile.lib, xz_wrap.sh).
		"xz-x86-bcj-tool": func(t *testing.T) []byte {
			return runTool(t, raw, "xz", "--check=crc32", "--x86", "--lzma2=preset=6,dict=1MiB", "-c")
		},
		"xz-multiblock-tool": func(t *testing.T) []byte {
			return runTool(t, raw, "xz", "--check=sha256", "--block-size=65536", "-c")
		},
		"lz4-legacy-tool": func(t *testing.T) []byte { return runTool(t, raw, "lz4", "-l", "-9", "-c") },
		"zstd-tool":       func(t *testing.T) []byte { return runTool(t, raw, "zstd", "-19", "-c") },
		"bzip2-tool":      func(t *testing.T) []byte { return runTool(t, raw, "bzip2", "-9", "-c") },
		"lzma-tool":       func(t *testing.T) []byte { return runTool(t, raw, "lzma", "-3", "-c") },
	}
	for name, compress := range compressors {
		t.Run(name, func(t *testing.T) {
			payload := compress(t)
			for _, header := range []bool{true, false} {
				img := bzImage(payload, len(raw), header)
				got, err := ExtractVmlinux(img)
				if err != nil {
					t.Fatalf("header=%v: %v", header, err)
				}
				if !bytes.Equal(got, raw) {
					t.Fatalf("header=%v: decompressed %d bytes differ from the %d-byte original", header, len(got), len(raw))
				}
			}
		})
	}
}

func TestExtractVmlinuxELFUnchanged(t *testing.T) {
	raw := testELF(t, 4096, elf.EM_X86_64)
	got, err := ExtractVmlinux(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Fatal("an ELF vmlinux was changed")
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	raw := testELF(t, 50_000, elf.EM_X86_64)
	gz := gzipped(t, raw)
	corrupt := append([]byte(nil), gz...)
	for i := len(corrupt) / 3; i < len(corrupt)/2; i++ {
		corrupt[i] ^= 0x5a
	}
	arm := testELF(t, 4096, elf.EM_AARCH64)
	truncated := gzipped(t, raw[:len(raw)/2])
	cases := map[string]struct {
		img  []byte
		want string
	}{
		"no payload":       {bzImage(nil, 0, false), "no supported compressed payload found"},
		"empty":            {nil, "no supported compressed payload found"},
		"corrupt gzip":     {bzImage(corrupt, len(raw), true), "no supported compressed payload found"},
		"not x86_64":       {arm, "EM_X86_64"},
		"arm in bzImage":   {bzImage(gzipped(t, arm), len(arm), true), "EM_X86_64"},
		"truncated ELF":    {bzImage(truncated, len(raw)/2, true), "truncated"},
		"random bytes":     {bytes.Repeat([]byte("\x1f\x8b\x08garbage\xfd7zXZ\x00\x02\x21\x4c\x18\x10\x00\x00\x00"), 100), "formats tried: gzip, xz, zstd, lz4, bzip2, lzma"},
		"payload past end": {func() []byte { b := bzImage(gz, len(raw), true); return b[:len(b)/2] }(), "no supported compressed payload found"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ExtractVmlinux(c.img)
			if err == nil {
				t.Fatalf("got %d bytes and no error", len(got))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestBCJX86Reversible(t *testing.T) {
	// A hand-made encode of one call: absolute target 0x00001005 at
	// position 0 decodes to the relative offset 0x1000.
	buf := []byte{0xE8, 0x05, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90}
	bcjX86Decode(buf, 0)
	if got := binary.LittleEndian.Uint32(buf[1:]); got != 0x1000 {
		t.Fatalf("decoded offset %#x, want 0x1000", got)
	}
	// The tail shorter than an instruction is left alone.
	short := []byte{0x90, 0xE8, 1, 2, 3}
	bcjX86Decode(short, 0)
	if !bytes.Equal(short, []byte{0x90, 0xE8, 1, 2, 3}) {
		t.Fatalf("short tail changed: % x", short)
	}
}

func FuzzExtractVmlinux(f *testing.F) {
	raw := testELF(f, 2000, elf.EM_X86_64)
	f.Add(bzImage(gzipped(f, raw), len(raw), true))
	f.Add(bzImage(lz4Legacy(f, raw, 512), len(raw), false))
	f.Add(raw)
	f.Add([]byte("\xfd7zXZ\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := extractVmlinux(data, 4<<20)
		if err == nil {
			if cerr := checkVmlinux(bytes.NewReader(out), int64(len(out))); cerr != nil {
				t.Fatalf("accepted a kernel that fails the ELF check: %v", cerr)
			}
		}
	})
}

func FuzzXZDecode(f *testing.F) {
	raw := testELF(f, 2000, elf.EM_X86_64)
	var b bytes.Buffer
	w, _ := xz.NewWriter(&b)
	w.Write(raw)
	w.Close()
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		var m memSink
		_ = xzDecode(data, &limitWriter{w: &m, n: 1 << 20}, 1<<20)
	})
}
