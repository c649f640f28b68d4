package tarx

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testutil/treestate"
)

// makeTree builds a tree with the features a copy must keep.
func makeTree(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub", "deeper"), 0o755))
	must(os.Mkdir(filepath.Join(root, "empty"), 0o700))
	must(os.WriteFile(filepath.Join(root, "file.txt"), []byte("hello\n"), 0o640))
	must(os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "deeper", "data"), bytes.Repeat([]byte{1, 2, 3}, 100000), 0o600))
	must(os.Symlink("file.txt", filepath.Join(root, "rel-link")))
	must(os.Symlink("/nonexistent/target", filepath.Join(root, "sub", "abs-link")))
	must(os.Link(filepath.Join(root, "file.txt"), filepath.Join(root, "sub", "hard")))
	must(os.Chmod(filepath.Join(root, "sub"), 0o750))
	must(os.Chmod(filepath.Join(root, "run.sh"), 0o4755))
	mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(root, "file.txt"), mt, mt))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(root, "file.txt"), 1234, 5678))
		must(os.Lchown(filepath.Join(root, "rel-link"), 4321, 8765))
		must(os.Chmod(filepath.Join(root, "file.txt"), 0o640))
	}
	return root
}

// compare checks a copy against its source: every path with its mode, link,
// contents and modification time, and owners when owners is set.
func compare(t *testing.T, want, got map[string]treestate.Entry, owners bool) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if g.Mode != w.Mode || g.Link != w.Link || g.Size != w.Size || g.Sum != w.Sum || g.MTime != w.MTime {
			t.Errorf("%s: got mode %v link %q %d bytes mtime %d, want mode %v link %q %d bytes mtime %d (or other contents)",
				p, g.Mode, g.Link, g.Size, g.MTime, w.Mode, w.Link, w.Size, w.MTime)
		}
		if owners && (g.UID != w.UID || g.GID != w.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, g.UID, g.GID, w.UID, w.GID)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s", p)
		}
	}
}

func TestPackExtractRoundTrip(t *testing.T) {
	src := makeTree(t, t.TempDir())
	var buf bytes.Buffer
	if err := Pack(context.Background(), &buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	root := os.Geteuid() == 0
	if err := Extract(context.Background(), &buf, dst, Options{Chown: root, KeepSetid: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, treestate.Snapshot(t, src), treestate.Snapshot(t, filepath.Join(dst, "tree")), root)
	a, _ := os.Stat(filepath.Join(dst, "tree", "file.txt"))
	b, _ := os.Stat(filepath.Join(dst, "tree", "sub", "hard"))
	if !os.SameFile(a, b) {
		t.Error("hard link was not kept")
	}
}

func TestPackSingleFileAndRefusals(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "one")
	if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Pack(context.Background(), &buf, f); err != nil {
		t.Fatal(err)
	}
	hdr, err := tar.NewReader(&buf).Next()
	if err != nil || hdr.Name != "one" || hdr.Size != 1 {
		t.Fatalf("got %+v, %v", hdr, err)
	}
	if err := Pack(context.Background(), &buf, "/"); err == nil {
		t.Error("packing / was accepted")
	}
	if err := Pack(context.Background(), &buf, filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing source: %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err == nil {
		if err := Pack(context.Background(), &buf, dir); err == nil || !strings.Contains(err.Error(), "FIFO") {
			t.Errorf("fifo: %v", err)
		}
	}
}

type tarEntry struct {
	name, link string
	typ        byte
	body       string
}

func makeTar(t *testing.T, entries ...tarEntry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755 // searchable, for a test run by a user too
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestExtractRefusesEscapes(t *testing.T) {
	cases := map[string][]tarEntry{
		"dotdot":        {{name: "../evil", typ: tar.TypeReg, body: "x"}},
		"inner dotdot":  {{name: "a/../../evil", typ: tar.TypeReg, body: "x"}},
		"absolute":      {{name: "/evil", typ: tar.TypeReg, body: "x"}},
		"through link":  {{name: "link", link: "OUTSIDE", typ: tar.TypeSymlink}, {name: "link/evil", typ: tar.TypeReg, body: "x"}},
		"inner link":    {{name: "d/", typ: tar.TypeDir}, {name: "d/l", link: "../..", typ: tar.TypeSymlink}, {name: "d/l/evil", typ: tar.TypeReg, body: "x"}},
		"hardlink out":  {{name: "h", link: "../OUTSIDE/victim", typ: tar.TypeLink}},
		"hardlink abs":  {{name: "h", link: "/etc/passwd", typ: tar.TypeLink}},
		"link in link":  {{name: "l", link: ".", typ: tar.TypeSymlink}, {name: "l/l/evil", typ: tar.TypeReg, body: "x"}},
		"dir over link": {{name: "l", link: "OUTSIDE", typ: tar.TypeSymlink}, {name: "l/", typ: tar.TypeDir}, {name: "l/evil", typ: tar.TypeReg, body: "x"}},
	}
	for name, entries := range cases {
		// Through a FileSource too: the checks come before any contents.
		// Strictly (as the host takes a guest's stream) and replacing (as
		// the agent takes the host's).
		for kind, open := range readers(makeTar(t, entries...).Bytes()) {
			for mode, opts := range map[string]Options{"strict": {}, "replace": {Replace: true}} {
				t.Run(name+"/"+kind+"/"+mode, func(t *testing.T) {
					base := t.TempDir()
					outside := filepath.Join(base, "OUTSIDE")
					dst := filepath.Join(base, "dst")
					for _, d := range []string{outside, dst} {
						if err := os.Mkdir(d, 0o755); err != nil {
							t.Fatal(err)
						}
					}
					// Make "OUTSIDE" resolvable relative to dst, as an attacker would.
					if err := os.Symlink(outside, filepath.Join(dst, "OUTSIDE")); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("v"), 0o644); err != nil {
						t.Fatal(err)
					}
					r, _ := open()
					err := Extract(context.Background(), r, dst, opts)
					var esc *EscapeError
					var exists *ExistsError
					switch {
					case name == "dir over link" && opts.Replace:
						// Replacing the symlink by a real directory is fine, as
						// long as nothing lands outside.
						if err != nil {
							t.Fatalf("got %v", err)
						}
					case name == "dir over link":
						if !errors.As(err, &exists) {
							t.Fatalf("got %v, want ExistsError", err)
						}
					case !errors.As(err, &esc):
						t.Fatalf("got %v, want EscapeError", err)
					}
					for _, p := range []string{filepath.Join(base, "evil"), filepath.Join(outside, "evil"), "/evil"} {
						if _, err := os.Lstat(p); err == nil {
							t.Fatalf("%s was created", p)
						}
					}
				})
			}
		}
	}
}

func TestExtractReplacesFilesAndKeepsDirs(t *testing.T) {
	dst := t.TempDir()
	if err := os.WriteFile(filepath.Join(dst, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dst, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "d", "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tr := makeTar(t, tarEntry{name: "f", typ: tar.TypeReg, body: "new"}, tarEntry{name: "d/", typ: tar.TypeDir}, tarEntry{name: "d/n/x", typ: tar.TypeReg, body: "x"})
	if err := Extract(context.Background(), tr, dst, Options{Replace: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "new" {
		t.Errorf("f = %q", b)
	}
	for _, p := range []string{"d/keep", "d/n/x"} {
		if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
			t.Error(err)
		}
	}
	tr = makeTar(t, tarEntry{name: "d", typ: tar.TypeReg, body: "x"})
	if err := Extract(context.Background(), tr, dst, Options{Replace: true}); err == nil {
		t.Error("a file replaced a directory")
	}
	// Without Replace, nothing that exists is replaced.
	tr = makeTar(t, tarEntry{name: "f", typ: tar.TypeReg, body: "newer"})
	var exists *ExistsError
	if err := Extract(context.Background(), tr, dst, Options{}); !errors.As(err, &exists) {
		t.Errorf("replacing f without Replace: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "new" {
		t.Errorf("f = %q after a refused replacement", b)
	}
}

func TestExtractReadOnlyDirectoryIsFilled(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "ro/", Typeflag: tar.TypeDir, Mode: 0o555})
	_ = tw.WriteHeader(&tar.Header{Name: "ro/f", Typeflag: tar.TypeReg, Mode: 0o444, Size: 1})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	dst := t.TempDir()
	if err := Extract(context.Background(), &buf, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "ro"))
	if err != nil || fi.Mode().Perm() != 0o555 {
		t.Fatalf("ro: %v %v", fi.Mode(), err)
	}
	_ = os.Chmod(filepath.Join(dst, "ro"), 0o755)
}

func TestExtractRefusesDevices(t *testing.T) {
	tr := makeTar(t, tarEntry{name: "null", typ: tar.TypeChar})
	err := Extract(context.Background(), tr, t.TempDir(), Options{})
	if err == nil || !strings.Contains(err.Error(), "character device") {
		t.Fatalf("got %v", err)
	}
}

// TestPackReadsOnlyTheListedFile: a file swapped for a FIFO or a symlink
// after the walk listed it is refused at once, never read or followed.
func TestPackReadsOnlyTheListedFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("listed"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(f)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the listed inode alive, so that a new file cannot reuse its
	// number.
	if err := os.Link(f, filepath.Join(dir, "listed")); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	swaps := map[string]func() error{
		"fifo":    func() error { return syscall.Mkfifo(f, 0o644) },
		"symlink": func() error { return os.Symlink(secret, f) },
		"file":    func() error { return os.WriteFile(f, []byte("other"), 0o644) },
	}
	for name, swap := range swaps {
		t.Run(name, func(t *testing.T) {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			if err := swap(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				g, err := openListed(f, fi)
				if err == nil {
					g.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("a swapped file was opened")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("opening a FIFO in place of the listed file hangs")
			}
		})
	}
}

// onFirstRead runs f before the first read of r: something that happens
// after Extract checked Options.Top and before it took the first entry.
type onFirstRead struct {
	r    *bytes.Buffer
	f    func()
	done bool
}

func (o *onFirstRead) Read(p []byte) (int, error) {
	if !o.done {
		o.done = true
		o.f()
	}
	return o.r.Read(p)
}

// A stream that names only entries under Top, without an entry for Top
// itself, must not take a Top that appeared after the check (another copy's)
// for its own: it would write into it, and a failure of that other copy
// would then remove what this one reported copied.
func TestExtractDoesNotAdoptATopMadeByAnother(t *testing.T) {
	dst := t.TempDir()
	other := filepath.Join(dst, "top", "theirs")
	r := &onFirstRead{r: makeTar(t, tarEntry{name: "top/mine", typ: tar.TypeReg, body: "x"}), f: func() {
		if err := os.Mkdir(filepath.Join(dst, "top"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(other, []byte("other copy"), 0o644); err != nil {
			t.Fatal(err)
		}
	}}
	err := Extract(context.Background(), r, dst, Options{Top: "top"})
	var ee *ExistsError
	if !errors.As(err, &ee) {
		t.Fatalf("Extract into a Top made by another: err = %v, want *ExistsError", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "top", "mine")); err == nil {
		t.Errorf("the copy wrote into a Top it did not make")
	}
	if b, err := os.ReadFile(other); err != nil || string(b) != "other copy" {
		t.Errorf("the other copy's file: %q, %v", b, err)
	}
}

// A PAX sparse entry of a few bytes can announce a file of any size: its
// holes must stay holes, not be written out as zeros (a guest would fill the
// host's disk from a 10 KiB stream). testdata/sparse-1g.tar is GNU tar's
// (--sparse --format=pax) of "top": a 1 GiB hole, then "x\n".
func TestExtractKeepsSparseHoles(t *testing.T) {
	const size = 1<<30 + 2
	f, err := os.Open("testdata/sparse-1g.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dst := t.TempDir()
	if err := Extract(context.Background(), f, dst, Options{Top: "top"}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dst, "top")
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("a 1 GiB sparse entry took %d bytes of disk: its holes were written out", st.Blocks*512)
	}
	out, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tail := make([]byte, 4)
	if _, err := out.ReadAt(tail, size-4); err != nil || string(tail) != "\x00\x00x\n" {
		t.Errorf("the file ends %q, %v; want its data after the hole", tail, err)
	}
}

// TestExtractReplaceLeavesDestinationAlone: a "./" entry (tar c . makes
// one) never changes the destination directory's mode, even when the
// copy may replace what exists.
func TestExtractReplaceLeavesDestinationAlone(t *testing.T) {
	dst := t.TempDir()
	if err := os.Chmod(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o777})
	_ = tw.WriteHeader(&tar.Header{Name: "./f", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	if err := Extract(context.Background(), &buf, dst, Options{Replace: true}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("destination: %v, %v; want its mode 0750 kept", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "f")); err != nil {
		t.Fatal(err)
	}
}
