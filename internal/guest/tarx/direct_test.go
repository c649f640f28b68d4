package tarx

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil/treestate"
)

// fileWriter is a FileWriter over a buffer. before, when set, runs on the
// file before its contents are copied (to change it under Pack's feet).
type fileWriter struct {
	bytes.Buffer
	calls  int
	before func(f *os.File)
}

func (w *fileWriter) WriteFile(f *os.File, n int64) (int64, error) {
	w.calls++
	if w.before != nil {
		w.before(f)
	}
	m, err := io.CopyN(&w.Buffer, f, n)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("file ended early: %w", io.ErrUnexpectedEOF)
	}
	return m, err
}

// fileSource is a FileSource over a byte stream that moves at most step
// bytes per ReadToFile call, and counts what it moved.
type fileSource struct {
	r     io.Reader
	step  int
	moved int64
}

func (s *fileSource) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *fileSource) ReadToFile(f *os.File, n int) (int, error) {
	p := make([]byte, min(n, s.step))
	k, err := s.r.Read(p)
	if k > 0 {
		if _, werr := f.Write(p[:k]); werr != nil {
			return 0, werr
		}
		s.moved += int64(k)
		return k, nil
	}
	return 0, err
}

// sizes are file sizes around tar's block, Pack's directMin and a data
// frame's size.
var sizes = []int{0, 1, 511, 512, 513, directMin - 1, directMin, directMin + 1, 3*copyBufSize + 17}

func makeSizedTree(t *testing.T) (root string, want map[string][]byte) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "sized")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	want = map[string][]byte{}
	for _, n := range sizes {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*31 + n)
		}
		name := fmt.Sprintf("f%07d", n)
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want["sized/"+name] = data
	}
	return root, want
}

func TestPackFileWriterStreamIsPlainTar(t *testing.T) {
	root, want := makeSizedTree(t)
	// The headers carry access times, which reading may change: set them
	// ahead, where relatime leaves them alone.
	later := time.Now().Add(time.Hour)
	for _, p := range append(slices.Collect(maps.Keys(want)), "sized") {
		p = filepath.Join(filepath.Dir(root), p)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, later, fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	var plain bytes.Buffer
	if err := Pack(context.Background(), &plain, root); err != nil {
		t.Fatal(err)
	}
	var fw fileWriter
	if err := Pack(context.Background(), &fw, root); err != nil {
		t.Fatal(err)
	}
	if fw.calls != 3 {
		t.Errorf("WriteFile called %d times, want 3 (the files of %d bytes and more)", fw.calls, directMin)
	}
	if !bytes.Equal(plain.Bytes(), fw.Bytes()) {
		t.Fatal("the stream through WriteFile differs from the plain one")
	}
	b := plain.Bytes()
	if len(b)%blockSize != 0 || !bytes.Equal(b[len(b)-2*blockSize:], make([]byte, 2*blockSize)) {
		t.Fatalf("stream of %d bytes does not end with two zero blocks on a block boundary", len(b))
	}
	tr := tar.NewReader(bytes.NewReader(b))
	seen := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		got, err := io.ReadAll(tr)
		if err != nil || !bytes.Equal(got, want[hdr.Name]) {
			t.Fatalf("%s: %d bytes, %v; want %d bytes", hdr.Name, len(got), err, len(want[hdr.Name]))
		}
		seen++
	}
	if seen != len(want) {
		t.Fatalf("read %d files, want %d", seen, len(want))
	}
	t.Run("gnu tar reads it", func(t *testing.T) {
		if _, err := exec.LookPath("tar"); err != nil {
			t.Skip("no tar command here to cross-check the format with")
		}
		dst := t.TempDir()
		cmd := exec.Command("tar", "-xf", "-", "-C", dst)
		cmd.Stdin = bytes.NewReader(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar -x: %v\n%s", err, out)
		}
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(dst, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
			}
		}
	})
}

func TestPackNoticesFileChangingSize(t *testing.T) {
	cases := map[string]func(f *os.File){
		"shrinks": func(f *os.File) { _ = os.Truncate(f.Name(), directMin/2) },
		"grows": func(f *os.File) {
			g, err := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, _ = g.Write([]byte("more"))
				g.Close()
			}
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "moving")
			if err := os.WriteFile(src, make([]byte, directMin), 0o644); err != nil {
				t.Fatal(err)
			}
			fw := &fileWriter{before: change}
			err := Pack(context.Background(), fw, src)
			if err == nil || !strings.Contains(err.Error(), "changed size while being copied") {
				t.Fatalf("got %v, want a changed-size error", err)
			}
		})
	}
}

// readers returns the ways Extract may be given a stream: a plain reader,
// and a FileSource moving a few bytes at a time.
func readers(b []byte) map[string]func() (io.Reader, *fileSource) {
	return map[string]func() (io.Reader, *fileSource){
		"reader": func() (io.Reader, *fileSource) { return bytes.NewReader(b), nil },
		"file source": func() (io.Reader, *fileSource) {
			s := &fileSource{r: bytes.NewReader(b), step: 1000}
			return s, s
		},
	}
}

func TestExtractFromFileSource(t *testing.T) {
	root, want := makeSizedTree(t)
	var buf bytes.Buffer
	if err := Pack(context.Background(), &buf, root); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, d := range want {
		total += int64(len(d))
	}
	for kind, open := range readers(buf.Bytes()) {
		t.Run(kind, func(t *testing.T) {
			dst := t.TempDir()
			r, fs := open()
			if err := Extract(context.Background(), r, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			for name, data := range want {
				got, err := os.ReadFile(filepath.Join(dst, name))
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
				}
			}
			if fs != nil && fs.moved != total {
				t.Errorf("%d bytes went through ReadToFile, want all %d of the files' contents", fs.moved, total)
			}
		})
	}
	// The full tree (modes, links, owners) through a FileSource too.
	src := makeTree(t, t.TempDir())
	buf.Reset()
	if err := Pack(context.Background(), &buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	isRoot := os.Geteuid() == 0
	if err := Extract(context.Background(), &fileSource{r: &buf, step: 4096}, dst, Options{Chown: isRoot, KeepSetid: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, treestate.Snapshot(t, src), treestate.Snapshot(t, filepath.Join(dst, "tree")), isRoot)
}

func TestExtractSparseFromFileSource(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar command here to make a sparse archive with")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "holes")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 300 << 10, 900 << 10} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xab}, 5000), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("tar", "--sparse", "--format=posix", "-cf", "-", "-C", dir, "holes").Output()
	if err != nil {
		t.Fatalf("tar --sparse: %v", err)
	}
	hdr, err := tar.NewReader(bytes.NewReader(out)).Next()
	if err != nil || !paxSparse(hdr) {
		t.Skipf("tar did not write a PAX sparse entry (%v); nothing to test", err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for kind, open := range readers(out) {
		t.Run(kind, func(t *testing.T) {
			dst := t.TempDir()
			r, _ := open()
			if err := Extract(context.Background(), r, dst, Options{}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dst, "holes"))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("sparse file: %d bytes, %v; want %d bytes as written", len(got), err, len(want))
			}
		})
	}
}

func TestExtractTruncatedStreamLeavesNoPartialFile(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 100000)
	full := makeTar(t, tarEntry{name: "first", typ: tar.TypeReg, body: "complete"},
		tarEntry{name: "big", typ: tar.TypeReg, body: string(data)}).Bytes()
	// Cut inside big's contents.
	cut := full[:3*blockSize+len(data)/2]
	for kind, open := range readers(cut) {
		t.Run(kind, func(t *testing.T) {
			dst := t.TempDir()
			r, _ := open()
			err := Extract(context.Background(), r, dst, Options{})
			if err == nil || !strings.Contains(err.Error(), `"big"`) {
				t.Fatalf("got %v, want an error about big", err)
			}
			if _, err := os.Lstat(filepath.Join(dst, "big")); err == nil {
				t.Error("the partial file was left behind")
			}
			if b, err := os.ReadFile(filepath.Join(dst, "first")); err != nil || string(b) != "complete" {
				t.Errorf("first: %q, %v", b, err)
			}
		})
	}
}

// copyBufSize is the extractor's copy buffer: sizes around it cross its
// chunk boundaries.
const copyBufSize = 256 << 10

// paxSparse reports whether hdr is a PAX sparse entry.
func paxSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
