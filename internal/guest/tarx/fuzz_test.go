package tarx_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guest/tarx"
)

type fuzzEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

// fuzzTar writes entries as a tar stream; the seeds of FuzzExtract.
func fuzzTar(f *testing.F, entries ...fuzzEntry) []byte {
	f.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				f.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return b.Bytes()
}

// FuzzExtract feeds arbitrary tar streams (what the other side of a copy
// sends) to Extract: it must never panic, and never create or change
// anything outside the directory it unpacks into.
func FuzzExtract(f *testing.F) {
	f.Add(fuzzTar(f, fuzzEntry{name: "d/", typ: tar.TypeDir, mode: 0o755}, fuzzEntry{name: "d/f", body: "x", typ: tar.TypeReg, mode: 0o644},
		fuzzEntry{name: "d/l", link: "f", typ: tar.TypeSymlink, mode: 0o777}, fuzzEntry{name: "h", link: "d/f", typ: tar.TypeLink, mode: 0o644}))
	f.Add(fuzzTar(f, fuzzEntry{name: "../canary/x", body: "evil", typ: tar.TypeReg, mode: 0o644}))
	f.Add(fuzzTar(f, fuzzEntry{name: "up", link: "..", typ: tar.TypeSymlink, mode: 0o777}, fuzzEntry{name: "up/canary/x", body: "evil", typ: tar.TypeReg, mode: 0o644}))
	f.Add(fuzzTar(f, fuzzEntry{name: "abs", link: "/", typ: tar.TypeSymlink, mode: 0o777}, fuzzEntry{name: "h", link: "abs/etc/passwd", typ: tar.TypeLink, mode: 0o644}))
	f.Add(fuzzTar(f, fuzzEntry{name: "ro/", typ: tar.TypeDir, mode: 0o500}, fuzzEntry{name: "ro/f", body: "x", typ: tar.TypeReg, mode: 0o4755}))
	f.Add(fuzzTar(f, fuzzEntry{name: "c", typ: tar.TypeChar, mode: 0o644}, fuzzEntry{name: "p", typ: tar.TypeFifo, mode: 0o644}))
	f.Add([]byte("not a tar stream"))
	f.Fuzz(func(t *testing.T, data []byte) {
		top := t.TempDir()
		into := filepath.Join(top, "into")
		canary := filepath.Join(top, "canary")
		for _, d := range []string{into, canary} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		_ = tarx.Extract(context.Background(), bytes.NewReader(data), into, tarx.Options{})
		err := filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if p != top && p != into && p != canary && !strings.HasPrefix(p, into+string(filepath.Separator)) {
				t.Fatalf("extract wrote %s, outside %s", p, into)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Let the test's cleanup remove whatever modes were applied.
		_ = filepath.Walk(into, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
	})
}
