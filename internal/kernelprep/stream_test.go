package kernelprep

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBCJX86StreamMatchesWhole checks that the filter run over a stream in
// pieces of any size gives the bytes the one-buffer algorithm gives.
func TestBCJX86StreamMatchesWhole(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	data := make([]byte, 200_000)
	for i := range data {
		// Dense in E8/E9 and 00/FF, so that instructions straddle
		// pieces and the carried mask matters.
		data[i] = []byte{0xE8, 0xE9, 0x00, 0xFF, 0x90, byte(rng.Intn(256))}[rng.Intn(6)]
	}
	for _, start := range []uint32{0, 0x1000000} {
		want := bytes.Clone(data)
		bcjX86Decode(want, start)
		for _, bufSize := range []int{5, 6, 7, 9, 64, 4096} {
			var got bytes.Buffer
			w := &bcjX86Writer{w: &got, f: bcjX86{pos: start}, buf: make([]byte, 0, bufSize)}
			for p := data; len(p) > 0; {
				n := min(len(p), 1+rng.Intn(3*bufSize))
				if _, err := w.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				i := 0
				for i < len(want) && i < got.Len() && got.Bytes()[i] == want[i] {
					i++
				}
				t.Fatalf("start %#x, pieces of %d: streamed output differs from the whole-buffer decode at byte %d (lengths %d, %d)", start, bufSize, i, got.Len(), len(want))
			}
		}
	}
}

// bigELF is an x86_64 ELF file of about n MiB whose body repeats 1 MiB:
// 16 KiB of testELF code (calls and jumps included) and zeros, so that it
// compresses fast and small.
func bigELF(t testing.TB, mib int) []byte {
	t.Helper()
	const hdr = 64 + 56
	small := testELF(t, 16<<10, elf.EM_X86_64)
	small = append(small, make([]byte, 1<<20-16<<10)...)
	out := make([]byte, 0, hdr+mib<<20)
	out = append(out, small[:hdr]...)
	binary.LittleEndian.PutUint64(out[64+32:], uint64(hdr+mib<<20))
	binary.LittleEndian.PutUint64(out[64+40:], uint64(hdr+mib<<20))
	for range mib {
		out = append(out, small[hdr:]...)
	}
	return out
}

// TestWriteVmlinuxFileStreams decodes a 64 MiB kernel in a child process
// and fails if the child's peak RSS (VmHWM) comes near the kernel's size:
// the output must stream to the file, not be gathered in memory first
// (which is what made kernel import peak at 270 MB of RSS in bangerd).
func TestWriteVmlinuxFileStreams(t *testing.T) {
	if img := os.Getenv("KERNELPREP_TEST_DECODE"); img != "" {
		decodeChild(t, img)
		return
	}
	const mib = 64
	raw := bigELF(t, mib)
	sum := sha256.Sum256(raw)
	payloads := map[string][]byte{}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw)
	zw.Close()
	payloads["gzip"] = gz.Bytes()
	if xz := runToolMaybe(raw, "xz", "--format=xz", "--check=crc32", "--x86", "--lzma2=preset=1,dict=8MiB", "-T1", "-c"); xz != nil {
		payloads["xz+bcj"] = xz
	} else {
		t.Log("xz not installed: only the gzip payload is checked")
	}
	for name, payload := range payloads {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(img, bzImage(payload, len(raw), true), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestWriteVmlinuxFileStreams$", "-test.v")
			cmd.Env = append(os.Environ(), "KERNELPREP_TEST_DECODE="+img)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("decoding in a child process: %v\n%s", err, out)
			}
			var hwm int64
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "VmHWM-KiB "); ok {
					hwm, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if hwm == 0 {
				t.Fatalf("the child printed no VmHWM:\n%s", out)
			}
			// The test binary, the compressed image, the decoder's window
			// (8 MiB here) and garbage; a decoded kernel held whole would
			// be 64 MiB on its own.
			const boundKiB = 48 << 10
			t.Logf("peak RSS %d MiB to decode %d MiB from a %.1f MiB payload", hwm>>10, mib, float64(len(payload))/(1<<20))
			if hwm > boundKiB {
				t.Fatalf("decoding a %d MiB kernel peaked at %d MiB of RSS (bound %d MiB): the decoded kernel is being held in memory again", mib, hwm>>10, boundKiB>>10)
			}
			f, err := os.Open(img + ".out")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h.Sum(nil), sum[:]) {
				t.Fatal("the decoded kernel differs from the original")
			}
		})
	}
}

// decodeChild is the child's side: decode img to img.out, print VmHWM.
func decodeChild(t *testing.T, img string) {
	if err := WriteVmlinuxFile(img, img+".out"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			fmt.Printf("VmHWM-KiB %s\n", strings.Fields(v)[0])
		}
	}
}

// TestWriteVmlinuxFileRemovesOnError leaves no file behind for an image
// that holds no kernel, and refuses to overwrite an existing file.
func TestWriteVmlinuxFileRemovesOnError(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(img, bytes.Repeat([]byte{0x90}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "vmlinux")
	if err := WriteVmlinuxFile(img, dst); err == nil {
		t.Fatal("an image without a kernel was accepted")
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a failed decode left %s behind (%v)", dst, err)
	}
	if err := os.WriteFile(dst, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := testELF(t, 1000, elf.EM_X86_64)
	if err := os.WriteFile(img, bzImage(gzipped(t, raw), len(raw), true), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteVmlinuxFile(img, dst); err == nil {
		t.Fatal("an existing file was overwritten")
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep" {
		t.Fatalf("existing file changed to %q", b)
	}
}

// runToolMaybe compresses data with an external program, or returns nil
// when it is not installed or fails.
func runToolMaybe(data []byte, name string, args ...string) []byte {
	if _, err := exec.LookPath(name); err != nil {
		return nil
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		return nil
	}
	return out
}
