package tarsafe

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// ent is one entry of a test stream.
type ent struct {
	name, link, body string
	typ              byte
	mode             int64
	pax              map[string]string
}

func reg(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) ent       { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func sym(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hard(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}

// mkTar makes a tar stream of es.
func mkTar(t testing.TB, es ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), PAXRecords: e.pax}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.pax != nil {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// jail is a destination inside a parent that also holds outside/, with a
// file outside/secret; nothing but dst may ever change.
type jail struct {
	parent, dst, outside string
}

func newJail(t testing.TB) jail {
	t.Helper()
	p := t.TempDir()
	j := jail{parent: p, dst: filepath.Join(p, "dst"), outside: filepath.Join(p, "outside")}
	for _, d := range []string{j.dst, j.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(j.outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	return j
}

// check fails t if anything but dst changed.
func (j jail) check(t testing.TB) {
	t.Helper()
	if got := names(t, j.parent); !slices.Equal(got, []string{"dst", "outside"}) {
		t.Fatalf("written beside the destination: %v", got)
	}
	if got := names(t, j.outside); !slices.Equal(got, []string{"secret"}) {
		t.Fatalf("written outside the destination: %v", got)
	}
	if b, err := os.ReadFile(filepath.Join(j.outside, "secret")); err != nil || string(b) != "s" {
		t.Fatalf("outside/secret changed: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(j.outside, "secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("outside/secret's mode changed: %v, %v", fi, err)
	}
}

func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// strict and the policies of the four callers, for tests that must hold
// under every one.
func policies(j jail) map[string]Options {
	return map[string]Options{
		"strict":  {},
		"files":   {Replace: ReplaceFiles, KeepSetid: true, Holes: true},
		"image":   {Replace: ReplaceAll, RootedNames: true, Whiteouts: true, Special: SpecialMake, Xattrs: true, Skip: func(string, string) {}},
		"package": {Replace: ReplaceFiles, Special: SpecialSkip, Skip: func(string, string) {}, ContainSymlinks: true},
		"top":     {Top: "top"},
	}
}
