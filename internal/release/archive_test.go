package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/tarsafe"
)

// entry is one member of a test archive.
type entry struct {
	name string
	typ  byte
	body []byte
	link string
	size int64 // when set, the header claims this size and no body follows
}

// contents is what each release file holds in the test archives.
func contents(name string) []byte { return []byte("contents of " + name + "\n") }

// releaseEntries are the entries of a valid release archive.
func releaseEntries() []entry {
	var es []entry
	for _, n := range ArchiveFiles {
		es = append(es, entry{name: n, typ: tar.TypeReg, body: contents(n)})
	}
	return es
}

// makeArchive writes es as a gzip'd tar, with odd modes the extraction
// must not keep.
func makeArchive(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o4777, Size: int64(len(e.body)), Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.size != 0 {
			break // a header claiming more than follows: the stream ends here
		}
		if _, err := tw.Write(e.body); err != nil && e.typ == tar.TypeReg {
			t.Fatal(err)
		}
	}
	_ = tw.Close() // fails for a short entry, whose header is written already
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkEmpty fails unless dir holds nothing.
func checkEmpty(t testing.TB, dir string) {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Fatalf("%s not empty after a refused archive: %v", dir, names)
	}
}

func TestExtractValid(t *testing.T) {
	dir := t.TempDir()
	files, err := Extract(bytes.NewReader(makeArchive(t, releaseEntries())), dir)
	if err != nil {
		t.Fatal(err)
	}
	checkExtracted(t, dir, files)
}

func checkExtracted(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if len(files) != len(ArchiveFiles) {
		t.Fatalf("files: %v", files)
	}
	for _, n := range ArchiveFiles {
		p := files[n]
		if p != filepath.Join(dir, n) {
			t.Errorf("%s at %q", n, p)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if slices.Contains(Binaries, n) {
			want = 0o755
		}
		if !fi.Mode().IsRegular() || fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", n, fi.Mode(), want)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, contents(n)) {
			t.Errorf("%s: contents %q", n, b)
		}
	}
}

// An archive made the way the publish script makes one, with GNU tar and
// gzip -n, extracts.
func TestExtractGNUTarArchive(t *testing.T) {
	for _, tool := range []string{"tar", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to make an archive as the publish script does: %v", tool, err)
		}
	}
	src := t.TempDir()
	for _, n := range ArchiveFiles {
		if err := os.WriteFile(filepath.Join(src, n), contents(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "a.tar.gz")
	script := `tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -C "$1" -cf - ` +
		strings.Join(ArchiveFiles, " ") + ` | gzip -n > "$2"`
	if b, err := exec.Command("sh", "-c", script, "sh", src, out).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	files, err := Extract(f, dir)
	if err != nil {
		t.Fatal(err)
	}
	checkExtracted(t, dir, files)
}

func TestExtractRefusals(t *testing.T) {
	valid := releaseEntries()
	with := func(extra ...entry) []entry { return append(slices.Clone(valid), extra...) }
	without := func(name string) []entry {
		return slices.DeleteFunc(slices.Clone(valid), func(e entry) bool { return e.name == name })
	}
	replace := func(e entry) []entry {
		return append(without(e.name), e)
	}
	cases := map[string]struct {
		es   []entry
		want string
	}{
		"extra entry":    {with(entry{name: "README", typ: tar.TypeReg}), "not one of the files"},
		"missing entry":  {without("bangerd"), "has no bangerd"},
		"duplicate":      {with(entry{name: "banger", typ: tar.TypeReg, body: []byte("again")}), "twice"},
		"symlink":        {replace(entry{name: "banger", typ: tar.TypeSymlink, link: "/bin/sh"}), "not a regular file"},
		"hard link":      {replace(entry{name: "bangerd", typ: tar.TypeLink, link: "banger"}), "not a regular file"},
		"directory":      {with(entry{name: "install.md/", typ: tar.TypeDir}), "not one of"},
		"device":         {replace(entry{name: "install.md", typ: tar.TypeChar}), "not a regular file"},
		"traversal":      {with(entry{name: "../banger", typ: tar.TypeReg}), "not one of"},
		"dot slash":      {replace(entry{name: "./banger", typ: tar.TypeReg}), "not one of"},
		"absolute":       {replace(entry{name: "/banger", typ: tar.TypeReg}), "not one of"},
		"subdir":         {replace(entry{name: "bin/banger", typ: tar.TypeReg}), "not one of"},
		"oversize other": {replace(entry{name: "install.md", typ: tar.TypeReg, body: make([]byte, MaxOtherSize+1)}), "larger than"},
		"oversize bin":   {replace(entry{name: "banger", typ: tar.TypeReg, size: MaxBinarySize + 1}), "larger than"},
		"short entry":    {append(without("CHANGELOG.md"), entry{name: "CHANGELOG.md", typ: tar.TypeReg, size: 1000}), "release archive"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files, err := Extract(bytes.NewReader(makeArchive(t, c.es)), dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, %v; want an error saying %q", files, err, c.want)
			}
			checkEmpty(t, dir)
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "banger")); err == nil {
				t.Fatal("an entry escaped the directory")
			}
		})
	}
}

func TestExtractDamagedStreams(t *testing.T) {
	good := makeArchive(t, releaseEntries())
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-6] ^= 0xff // the gzip trailer's CRC-32
	cases := map[string][]byte{
		"truncated gzip": good[:len(good)-20],
		"cut mid-stream": good[:len(good)/2],
		"bad checksum":   badCRC,
		"not gzip":       []byte("this is not gzip at all"),
		"empty":          nil,
		"trailing bytes": append(bytes.Clone(good), "junk"...),
		"second member":  append(bytes.Clone(good), good...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if files, err := Extract(bytes.NewReader(data), dir); err == nil {
				t.Fatalf("accepted: %v", files)
			} else {
				t.Log(err)
			}
			checkEmpty(t, dir)
		})
	}
}

// An existing file is never replaced, and a refused archive leaves it.
func TestExtractReplacesNothing(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "install.md")
	if err := os.WriteFile(keep, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(bytes.NewReader(makeArchive(t, releaseEntries())), dir)
	var exists *tarsafe.ExistsError
	if !errors.As(err, &exists) {
		t.Fatalf("got %v, want an ExistsError", err)
	}
	if b, _ := os.ReadFile(keep); string(b) != "mine" {
		t.Fatalf("existing file changed: %q", b)
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 1 {
		t.Fatalf("left behind: %v", names)
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(makeArchive(f, releaseEntries()))
	f.Add(makeArchive(f, append(releaseEntries(), entry{name: "../x", typ: tar.TypeReg})))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Add(paxArchive(f, 2, 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		files, err := Extract(bytes.NewReader(data), dir)
		if err != nil {
			checkEmpty(t, dir)
			return
		}
		if len(files) != len(ArchiveFiles) {
			t.Fatalf("accepted with files %v", files)
		}
		names, _ := os.ReadDir(dir)
		if len(names) != len(ArchiveFiles) {
			t.Fatalf("dir holds %d entries", len(names))
		}
		for _, n := range names {
			if !n.Type().IsRegular() || !slices.Contains(ArchiveFiles, n.Name()) {
				t.Fatalf("unexpected %s (%v)", n.Name(), n.Type())
			}
			fi, err := n.Info()
			if err != nil {
				t.Fatal(err)
			}
			want := os.FileMode(0o644)
			if slices.Contains(Binaries, n.Name()) {
				want = 0o755
				if fi.Size() == 0 {
					t.Fatalf("empty binary %s accepted", n.Name())
				}
			}
			if fi.Mode() != want {
				t.Fatalf("%s has mode %v, want %v", n.Name(), fi.Mode(), want)
			}
		}
	})
}
