package ociregistry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Registry is a registry served until the test ends.
type Registry struct {
	Host string // host:port, to put in front of a repository name
}

// Start serves a registry on loopback until the test ends.
func Start(t testing.TB) *Registry {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return &Registry{Host: strings.TrimPrefix(srv.URL, "http://")}
}

// Push writes a linux/amd64 image of one layer (a gzipped tar, see Layer
// and DirLayer) and the config cfg as repoTag ("e2e/plain:1"), and returns
// its full reference.
func (r *Registry) Push(t testing.TB, repoTag string, layer []byte, cfg v1.Config) string {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	})
	if err != nil {
		t.Fatalf("layer for %s: %v", repoTag, err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64", Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, l); err != nil {
		t.Fatal(err)
	}
	ref := r.Host + "/" + repoTag
	nr, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	if err := remote.Write(nr, img); err != nil {
		t.Fatalf("push %s to the test registry: %v", ref, err)
	}
	return ref
}

// Entry is one entry of a test layer: its header, and its body for a
// regular file.
type Entry struct {
	Hdr  tar.Header
	Body []byte
}

// File is a regular file entry, mode 0644.
func File(name string, body []byte) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, Body: body}
}

// Dir is a directory entry, mode 0755.
func Dir(name string) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

// Layer is a gzipped tar of the entries, in order, headers as given (so a
// test may write hostile ones).
func Layer(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	return gzipTar(t, func(tw *tar.Writer) error {
		for _, e := range entries {
			h := e.Hdr
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if len(e.Body) > 0 {
				if _, err := tw.Write(e.Body); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// DirLayer is a gzipped tar of the tree under root, less what skip names
// (slash-separated paths relative to root; nil skips nothing). Every entry
// is owned by root.
func DirLayer(t testing.TB, root string, skip func(rel string) bool) []byte {
	t.Helper()
	return gzipTar(t, func(tw *tar.Writer) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel := filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
			if skip != nil && skip(rel) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			return addPath(tw, p, rel)
		})
	})
}

// addPath writes the file, directory or symlink at p as rel, owned by root.
func addPath(tw *tar.Writer, p, rel string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	h.Name, h.Uid, h.Gid, h.Uname, h.Gname = rel, 0, 0, "", ""
	if fi.IsDir() {
		h.Name += "/"
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// gzipTar runs write on a tar writer and returns the gzipped result; an
// error fails the test.
func gzipTar(t testing.TB, write func(*tar.Writer) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	err := write(tw)
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatalf("write a test layer: %v", err)
	}
	return buf.Bytes()
}
