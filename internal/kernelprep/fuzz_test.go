package kernelprep

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fzEntry struct {
	name, body, link string
	typ              byte
}

func fzTar(f *testing.F, entries ...fzEntry) []byte {
	f.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o755, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil && e.typ == tar.TypeReg {
			f.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return b.Bytes()
}

// FuzzExtractKernelTar feeds arbitrary data.tar streams (a package's
// content, from a download) to the kernel package extractor: it must never
// panic, and never create anything outside its destination.
func FuzzExtractKernelTar(f *testing.F) {
	f.Add(fzTar(f, fzEntry{name: "./boot/", typ: tar.TypeDir}, fzEntry{name: "./boot/vmlinuz-6.1.0-1-amd64", body: "MZ", typ: tar.TypeReg},
		fzEntry{name: "./lib/modules/6.1.0-1-amd64/modules.order", body: "", typ: tar.TypeReg}))
	f.Add(fzTar(f, fzEntry{name: "./lib/modules/6.1.0/up", link: "../../../..", typ: tar.TypeSymlink},
		fzEntry{name: "./lib/modules/6.1.0/up/canary/x", body: "evil", typ: tar.TypeReg}))
	f.Add(fzTar(f, fzEntry{name: "./boot/l", link: "/", typ: tar.TypeSymlink}, fzEntry{name: "./boot/h", link: "./boot/l/etc/passwd", typ: tar.TypeLink}))
	f.Add(fzTar(f, fzEntry{name: "./boot/../../canary/x", body: "evil", typ: tar.TypeReg}))
	f.Add([]byte("not a tar stream"))
	f.Fuzz(func(t *testing.T, data []byte) {
		top := t.TempDir()
		dst := filepath.Join(top, "dst")
		canary := filepath.Join(top, "canary")
		for _, d := range []string{dst, canary} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		_ = extractKernelTar(context.Background(), bytes.NewReader(data), dst)
		err := filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if p != top && p != dst && p != canary && !strings.HasPrefix(p, dst+string(filepath.Separator)) {
				t.Fatalf("extract wrote %s, outside %s", p, dst)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
