package newc

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sample(t testing.TB) []byte {
	var b bytes.Buffer
	w := NewWriter(&b)
	steps := []error{
		w.Dir("dev", 0o755),
		w.CharDev("dev/console", 0o600, 5, 1),
		w.Dir("etc", 0o755),
		w.File("etc/odd", 0o640, []byte("abc")), // lengths not a multiple of 4
		w.File("/etc/empty", 0o644, nil),
		w.File("init", 0o755, bytes.Repeat([]byte{0x7f, 'E', 'L', 'F', 1}, 1001)),
		w.Symlink("etc/link", "odd"),
		w.Close(),
	}
	for _, err := range steps {
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	data := sample(t)
	if !bytes.Equal(data, sample(t)) {
		t.Fatal("the same members gave different archives")
	}
	r := NewReader(bytes.NewReader(data))
	type member struct {
		name string
		mode uint32
		body string
		rdev [2]uint32
	}
	var got []member
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(body)) != h.Size {
			t.Fatalf("%s: read %d bytes, header says %d", h.Name, len(body), h.Size)
		}
		got = append(got, member{h.Name, h.Mode, string(body), [2]uint32{h.RDevMajor, h.RDevMinor}})
	}
	want := []member{
		{"dev", TypeDir | 0o755, "", [2]uint32{}},
		{"dev/console", TypeChar | 0o600, "", [2]uint32{5, 1}},
		{"etc", TypeDir | 0o755, "", [2]uint32{}},
		{"etc/odd", TypeReg | 0o640, "abc", [2]uint32{}},
		{"etc/empty", TypeReg | 0o644, "", [2]uint32{}},
		{"init", TypeReg | 0o755, strings.Repeat("\x7fELF\x01", 1001), [2]uint32{}},
		{"etc/link", TypeSymlink | 0o777, "odd", [2]uint32{}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d members, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("member %d: got %+v, want %+v", i, got[i].name, want[i].name)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the trailer: %v", err)
	}
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter(io.Discard)
	for _, name := range []string{"../x", "a/../../x", "a//b", "a/./b"} {
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if err := w.Symlink("l", ""); err == nil {
		t.Error("empty symlink target accepted")
	}
	w.Close()
	if err := w.Dir("late", 0o755); err == nil {
		t.Error("write after Close accepted")
	}
}

func TestReaderErrors(t *testing.T) {
	data := sample(t)
	for name, bad := range map[string][]byte{
		"truncated":  data[:len(data)-200],
		"no trailer": data[:len(data)-124],
		"bad magic":  append([]byte("070707"), data[6:]...),
		"bad hex":    append([]byte("070701zz"), data[8:]...),
		"empty":      nil,
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(bad))
			for {
				_, err := r.Next()
				if err == io.EOF {
					t.Fatal("a damaged archive read to the end without error")
				}
				if err != nil {
					return
				}
				io.Copy(io.Discard, r)
			}
		})
	}
}

// TestCPIOToolReadsArchive checks the archive against GNU cpio, which reads
// it the way the kernel does.
func TestCPIOToolReadsArchive(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (apt package cpio); cannot cross-check the archive format")
	}
	data := sample(t)
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	if got, want := strings.Fields(string(out)), []string{"dev", "dev/console", "etc", "etc/odd", "etc/empty", "init", "etc/link"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("cpio -t listed %v, want %v", got, want)
	}
	dir := t.TempDir()
	// Extract everything but the device node (which needs mknod rights).
	cmd = exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "-f", "dev/console")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "odd")); err != nil || string(b) != "abc" {
		t.Fatalf("etc/odd: %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Size() != 5005 || st.Mode().Perm() != 0o755 {
		t.Fatalf("init: %v, %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc", "link")); err != nil || l != "odd" {
		t.Fatalf("etc/link: %q, %v", l, err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(sample(f))
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		total := int64(0)
		for i := 0; i < 10000; i++ {
			h, err := r.Next()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, r)
			if n > h.Size {
				t.Fatalf("%q gave %d bytes, size %d", h.Name, n, h.Size)
			}
			total += n
			if total > int64(len(data)) {
				t.Fatalf("read %d data bytes from %d input bytes", total, len(data))
			}
		}
	})
}
