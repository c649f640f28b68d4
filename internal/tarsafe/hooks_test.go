package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func extract(t *testing.T, dst string, opts Options, es ...ent) error {
	t.Helper()
	return Extract(context.Background(), bytes.NewReader(mkTar(t, es...)), dst, opts)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReplacePolicies(t *testing.T) {
	setup := func(t *testing.T) string {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(d, "dir", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("nothing", func(t *testing.T) {
		d := setup(t)
		var exists *ExistsError
		if err := extract(t, d, Options{}, reg("f", "new")); !errors.As(err, &exists) {
			t.Fatalf("got %v, want ExistsError", err)
		}
		if got := readFile(t, filepath.Join(d, "f")); got != "old" {
			t.Fatalf("f = %q", got)
		}
	})
	t.Run("files", func(t *testing.T) {
		d := setup(t)
		if err := extract(t, d, Options{Replace: ReplaceFiles}, reg("f", "new"), reg("dir/sub/g", "g")); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(d, "f")); got != "new" {
			t.Fatalf("f = %q", got)
		}
		if err := extract(t, d, Options{Replace: ReplaceFiles}, reg("dir", "x")); err == nil || !strings.Contains(err.Error(), "directory of that name exists") {
			t.Fatalf("a file over a directory: %v", err)
		}
		if got := names(t, d); !slices.Equal(got, []string{"dir", "f"}) {
			t.Fatalf("left %v; want no temporary files", got)
		}
	})
	t.Run("all", func(t *testing.T) {
		d := setup(t)
		if err := extract(t, d, Options{Replace: ReplaceAll}, reg("dir", "x"), sym("f", "dir")); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(d, "dir")); got != "x" {
			t.Fatalf("dir = %q", got)
		}
		if l, err := os.Readlink(filepath.Join(d, "f")); err != nil || l != "dir" {
			t.Fatalf("f: %q, %v", l, err)
		}
	})
	t.Run("link to itself", func(t *testing.T) {
		d := setup(t)
		if err := extract(t, d, Options{Replace: ReplaceAll}, hard("g", "f"), hard("g", "f")); err != nil {
			t.Fatal(err)
		}
		if got := names(t, d); !slices.Equal(got, []string{"dir", "f", "g"}) {
			t.Fatalf("left %v", got)
		}
	})
}

func TestWhiteouts(t *testing.T) {
	d := t.TempDir()
	lower := []ent{dir("a/"), reg("a/keep", "k"), reg("a/gone", "g"), dir("b/"), reg("b/old", "o"), dir("c/"), reg("c/x", "x")}
	opts := Options{Replace: ReplaceAll, Whiteouts: true}
	if err := extract(t, d, opts, lower...); err != nil {
		t.Fatal(err)
	}
	upper := []ent{reg("a/.wh.gone", ""), reg("b/new", "n"), reg("b/.wh..wh..opq", ""), reg(".wh.c", ""), reg(".wh.missing", ""), reg("x/.wh.nothing", ""), reg("a/.wh..wh.plnk", "")}
	if err := extract(t, d, opts, upper...); err != nil {
		t.Fatal(err)
	}
	if got := names(t, d); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("top holds %v; want c whited out and no whiteout files", got)
	}
	if got := names(t, filepath.Join(d, "a")); !slices.Equal(got, []string{"keep"}) {
		t.Errorf("a holds %v", got)
	}
	if got := names(t, filepath.Join(d, "b")); !slices.Equal(got, []string{"new"}) {
		t.Errorf("b holds %v; the opaque whiteout keeps only this layer's", got)
	}
	// Without the option, whiteouts are plain files.
	d2 := t.TempDir()
	if err := extract(t, d2, Options{}, reg(".wh.x", "")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, d2); !slices.Equal(got, []string{".wh.x"}) {
		t.Errorf("without Whiteouts: %v", got)
	}
	var esc *EscapeError
	if err := extract(t, t.TempDir(), opts, reg("a/.wh..", "")); !errors.As(err, &esc) {
		t.Errorf("a whiteout of ..: %v", err)
	}
}

func TestFilter(t *testing.T) {
	d := t.TempDir()
	opts := Options{Filter: func(h *tar.Header) (*tar.Header, error) {
		switch {
		case h.Name == "bad":
			return nil, errors.New("bad entry")
		case strings.HasPrefix(h.Name, "usr/"):
			c := *h
			c.Name = strings.TrimPrefix(h.Name, "usr/")
			return &c, nil
		case strings.HasPrefix(h.Name, "keep"):
			return h, nil
		}
		return nil, nil
	}}
	if err := extract(t, d, opts, reg("keep", "k"), reg("skip", "s"), reg("usr/moved", "m"), hard("keep2", "usr/moved")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, d); !slices.Equal(got, []string{"keep", "keep2", "moved"}) {
		t.Fatalf("got %v", got)
	}
	var esc *EscapeError
	if err := extract(t, t.TempDir(), opts, reg("keepa", "k"), hard("keepb", "skip")); !errors.As(err, &esc) || esc.Name != "keepb" {
		t.Fatalf("a link to a skipped entry: %v", err)
	}
	if err := extract(t, t.TempDir(), opts, reg("bad", "")); err == nil || !strings.Contains(err.Error(), "bad entry") {
		t.Fatalf("a filter error: %v", err)
	}
}

func TestPlaced(t *testing.T) {
	d := t.TempDir()
	got := map[string]string{}
	opts := Options{Placed: func(name string, h *tar.Header, fi fs.FileInfo) error {
		what := "made"
		if h != nil {
			what = h.Name
		}
		got[name] = what + ":" + fi.Mode().Type().String()
		if name == "boom" {
			return errors.New("placed failed")
		}
		return nil
	}}
	if err := extract(t, d, opts, reg("a/b/f", "x"), sym("a/l", "b")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "made:d---------", "a/b": "made:d---------", "a/b/f": "a/b/f:----------", "a/l": "a/l:L---------"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Placed(%s) = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if err := extract(t, t.TempDir(), opts, reg("boom", "")); err == nil || !strings.Contains(err.Error(), "placed failed") {
		t.Errorf("a Placed error: %v", err)
	}
}

func TestHoles(t *testing.T) {
	body := make([]byte, 4<<20)
	copy(body[1<<20:], "middle")
	copy(body[len(body)-3:], "end")
	for _, holes := range []bool{false, true} {
		d := t.TempDir()
		if err := extract(t, d, Options{Holes: holes}, reg("img", string(body))); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "img")
		if got := readFile(t, p); got != string(body) {
			t.Fatal("contents differ")
		}
		fi, _ := os.Stat(p)
		used := fi.Sys().(*syscall.Stat_t).Blocks * 512
		if holes && used >= fi.Size()/2 {
			t.Errorf("with Holes: %d bytes on disk for %d", used, fi.Size())
		}
		if !holes && used < fi.Size() {
			t.Logf("without Holes the filesystem still made %d of %d bytes sparse", used, fi.Size())
		}
	}
}

func TestSpecial(t *testing.T) {
	fifo := ent{name: "p", typ: tar.TypeFifo, mode: 0o640}
	if err := extract(t, t.TempDir(), Options{}, fifo); err == nil || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("refuse: %v", err)
	}
	var skipped []string
	d := t.TempDir()
	if err := extract(t, d, Options{Special: SpecialSkip, Skip: func(n, w string) { skipped = append(skipped, n+" "+w) }}, fifo); err != nil {
		t.Fatal(err)
	}
	if len(names(t, d)) != 0 || !slices.Equal(skipped, []string{"p FIFO"}) {
		t.Errorf("skip: made %v, told %v", names(t, d), skipped)
	}
	d = t.TempDir()
	if err := extract(t, d, Options{Special: SpecialMake}, fifo); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(d, "p")); err != nil || fi.Mode().Type() != fs.ModeNamedPipe || fi.Mode().Perm() != 0o640 {
		t.Errorf("make: %v, %v; want a FIFO of mode 0640", fi, err)
	}
}

func TestModesAndOwners(t *testing.T) {
	d := t.TempDir()
	e := reg("suid", "x")
	e.mode = 0o4755
	if err := extract(t, d, Options{Umask: 0o022}, e, ent{name: "dd/", typ: tar.TypeDir, mode: 0o777}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(d, "suid")); fi.Mode() != 0o755 {
		t.Errorf("strict: %v; want the setuid bit dropped", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(d, "dd")); fi.Mode().Perm() != 0o755 {
		t.Errorf("umask: %v", fi.Mode())
	}
	d = t.TempDir()
	if err := extract(t, d, Options{KeepSetid: true}, e); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(d, "suid")); fi.Mode() != 0o755|fs.ModeSetuid {
		t.Errorf("KeepSetid: %v", fi.Mode())
	}
	if os.Geteuid() != 0 {
		t.Skip("owners: only root can give files other owners")
	}
	d = t.TempDir()
	o := reg("owned", "x")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: o.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, Uid: 1234, Gid: 5678})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	if err := Extract(context.Background(), &buf, d, Options{Owners: true}); err != nil {
		t.Fatal(err)
	}
	if st := statOf(t, filepath.Join(d, "owned")); st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("Owners: %d:%d", st.Uid, st.Gid)
	}
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestXattrs(t *testing.T) {
	d := t.TempDir()
	probe := filepath.Join(d, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(probe, "user.probe", []byte("1"), 0); err != nil {
		t.Skipf("this filesystem takes no user.* xattrs: %v", err)
	}
	e := reg("f", "x")
	e.pax = map[string]string{"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.bogus.key": "x"}
	var told []string
	opts := Options{Xattrs: true, Skip: func(n, w string) { told = append(told, n+" "+w) }}
	if err := extract(t, d, opts, e); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(d, "f"), "user.note", buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Errorf("user.note = %q, %v", buf[:max(n, 0)], err)
	}
	if len(told) != 1 || !strings.Contains(told[0], "bogus.key") {
		t.Errorf("told %v; want the refused bogus.key", told)
	}
}

func TestContainSymlinks(t *testing.T) {
	opts := Options{ContainSymlinks: true}
	if err := extract(t, t.TempDir(), opts, dir("a/"), sym("a/up", ".."), sym("a/in", "../a")); err != nil {
		t.Fatalf("links inside: %v", err)
	}
	for _, target := range []string{"../..", "/etc", "../../x"} {
		var esc *EscapeError
		if err := extract(t, t.TempDir(), opts, sym("a/l", target)); !errors.As(err, &esc) {
			t.Errorf("link to %s: %v", target, err)
		}
	}
	if err := extract(t, t.TempDir(), Options{}, sym("l", "/etc")); err != nil {
		t.Errorf("without ContainSymlinks a symlink may point anywhere: %v", err)
	}
}

func TestTop(t *testing.T) {
	d := t.TempDir()
	var esc *EscapeError
	if err := extract(t, d, Options{Top: "top"}, reg("top/a", "a"), reg("other", "x")); !errors.As(err, &esc) || esc.Name != "other" {
		t.Fatalf("got %v", err)
	}
	if got := names(t, d); len(got) != 0 {
		t.Fatalf("a failed extraction left %v", got)
	}
}
