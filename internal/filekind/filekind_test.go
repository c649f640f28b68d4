package filekind_test

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"banger/internal/filekind"
	"banger/internal/kernelprep/newc"
)

// mkfsExt4 makes a real, small ext4 image with mkfs.ext4, or skips.
func mkfsExt4(t testing.TB, size string) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		for _, p := range []string{"/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"} {
			if _, e := os.Stat(p); e == nil {
				mkfs, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed; it makes the real ext4 image this test needs")
	}
	p := filepath.Join(t.TempDir(), "fs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", p, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return p
}

func ext4Of(t *testing.T, p string) (int64, error) {
	t.Helper()
	f, _, fi, err := filekind.Open(p)
	if err != nil {
		t.Fatalf("Open(%s): %v", p, err)
	}
	defer f.Close()
	return filekind.Ext4(f, fi.Size())
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExt4AcceptsRealImage(t *testing.T) {
	p := mkfsExt4(t, "4M")
	size, err := ext4Of(t, p)
	if err != nil || size != 4<<20 {
		t.Fatalf("Ext4(mkfs.ext4 image) = %d, %v; want %d", size, err, 4<<20)
	}
	// The same image cut short is refused: the kernel would not mount it.
	if err := os.Truncate(p, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := ext4Of(t, p); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Ext4(truncated image) = %v, want a truncation error", err)
	}
}

func TestExt4RefusesOtherFiles(t *testing.T) {
	random := make([]byte, 1<<20)
	_, _ = rand.Read(random)
	badBlock := make([]byte, 4096)
	binary.LittleEndian.PutUint16(badBlock[1024+0x38:], 0xEF53)
	binary.LittleEndian.PutUint32(badBlock[1024+0x18:], 7)
	zeroCounts := make([]byte, 4096)
	binary.LittleEndian.PutUint16(zeroCounts[1024+0x38:], 0xEF53)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"shadow", []byte("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"), "too small"},
		{"empty", nil, "too small"},
		{"random", random, "no ext4 superblock"},
		{"zeros", make([]byte, 1<<20), "no ext4 superblock"},
		{"blocksize", badBlock, "impossible block size"},
		{"counts", zeroCounts, "zero block, inode or group count"},
	}
	for _, c := range cases {
		if _, err := ext4Of(t, writeFile(t, c.name, c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Ext4(%s) = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

func TestOpenRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	devLink := filepath.Join(dir, "disk")
	if err := os.Symlink("/dev/null", devLink); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, want string }{
		{fifo, "is a fifo, not a regular file"},
		{dir, "is a directory, not a regular file"},
		{devLink, "/dev/null (where " + devLink + " leads) is a character device"},
		{"/proc/self/environ", "proc, a kernel pseudo-filesystem"},
		{"/sys/kernel/uevent_seqnum", "sysfs, a kernel pseudo-filesystem"},
		{filepath.Join(dir, "missing"), "no such file"},
	}
	for _, c := range cases {
		if _, err := os.Stat(c.path); err == nil || c.want == "no such file" {
			f, _, _, err := filekind.Open(c.path)
			if err == nil {
				f.Close()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open(%s) = %v, want an error containing %q", c.path, err, c.want)
			}
		}
	}
	// A symlink to a regular file is followed and reports the real path.
	target := writeFile(t, "real", []byte("x"))
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	f, real, _, err := filekind.Open(link)
	if err != nil || real != target {
		t.Fatalf("Open(link) = %q, %v; want %q", real, err, target)
	}
	f.Close()
}

// cpioArchive returns a small newc archive, as an initramfs holds.
func cpioArchive(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	w := newc.NewWriter(&b)
	if err := w.Dir("etc", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.File("init", 0o755, []byte("#!/bin/sh\necho hi\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, name string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch name {
	case "cpio":
		return data
	case "gzip":
		w := gzip.NewWriter(&b)
		_, _ = w.Write(data)
		_ = w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&b)
		_, _ = w.Write(data)
		_ = w.Close()
	case "xz":
		w, _ := xz.NewWriter(&b)
		_, _ = w.Write(data)
		_ = w.Close()
	case "lzma":
		w, _ := lzma.NewWriter(&b)
		_, _ = w.Write(data)
		_ = w.Close()
	case "lz4":
		// The legacy frame the kernel reads: magic, then size-prefixed blocks.
		block := make([]byte, lz4.CompressBlockBound(len(data)))
		n, err := lz4.CompressBlock(data, block, nil)
		if err != nil || n == 0 {
			t.Fatalf("lz4: %d, %v", n, err)
		}
		b.WriteString("\x02\x21\x4c\x18")
		_ = binary.Write(&b, binary.LittleEndian, uint32(n))
		b.Write(block[:n])
	case "bzip2":
		bz, err := exec.LookPath("bzip2")
		if err != nil {
			return nil
		}
		cmd := exec.Command(bz, "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return b.Bytes()
}

func TestInitrdAcceptsCpioBareAndCompressed(t *testing.T) {
	archive := cpioArchive(t)
	for _, name := range []string{"cpio", "gzip", "zstd", "xz", "lzma", "lz4", "bzip2"} {
		data := compress(t, name, archive)
		if data == nil {
			t.Logf("no %s on this host; skipping that format", name)
			continue
		}
		got, err := filekind.Initrd(bytes.NewReader(data))
		if err != nil || got != name {
			t.Errorf("Initrd(%s) = %q, %v", name, got, err)
		}
	}
}

func TestInitrdRefusesOtherFiles(t *testing.T) {
	random := make([]byte, 4096)
	_, _ = rand.Read(random)
	random[0] = 'x'
	notCpio := compress(t, "gzip", []byte("root:*:19000:0:99999:7:::\n"))
	badHex := cpioArchive(t)
	badHex[10] = 'z'
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "the file is empty"},
		{"shadow", []byte("root:*:19000:0:99999:7:::\n"), "neither a newc cpio archive"},
		{"random", random, "neither a newc cpio archive"},
		{"gzip of text", notCpio, "gzip data, but what it holds is not a newc cpio archive"},
		{"truncated gzip", notCpio[:10], "gzip data that does not decompress"},
		{"bad header", badHex, "non-hex byte"},
		{"short header", []byte("070701000"), "truncated"},
		{"elf", []byte("\x7fELF\x02\x01\x01"), "neither a newc cpio archive"},
	}
	for _, c := range cases {
		if _, err := filekind.Initrd(bytes.NewReader(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Initrd(%s) = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
