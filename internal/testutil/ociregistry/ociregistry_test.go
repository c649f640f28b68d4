package ociregistry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// names lists the entries of a gzipped tar.
func names(t *testing.T, layer []byte) map[string]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		out[h.Name] = h.Typeflag
	}
}

func TestDirLayerSkipsAndKeepsKinds(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc", "ssh"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("x\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "ssh", "key"), []byte("k"), 0o600)
	os.Symlink("hostname", filepath.Join(root, "etc", "name"))
	got := names(t, DirLayer(t, root, func(rel string) bool { return rel == "etc/ssh" }))
	want := map[string]byte{"etc/": tar.TypeDir, "etc/hostname": tar.TypeReg, "etc/name": tar.TypeSymlink}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for n, k := range want {
		if got[n] != k {
			t.Errorf("%s: type %q, want %q (all: %v)", n, got[n], k, got)
		}
	}
}

// An image pushed can be read back with its layer and config.
func TestPushAndPull(t *testing.T) {
	r := Start(t)
	ref := r.Push(t, "t/img:1", Layer(t, Dir("bin/"), File("bin/sh", []byte("#!/bin/sh\n"))), v1.Config{Cmd: []string{"/bin/sh"}})
	nr, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(nr)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil || cf.Architecture != "amd64" || cf.OS != "linux" || len(cf.Config.Cmd) != 1 {
		t.Fatalf("config = %+v, %v", cf, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	if got := names(t, data); got["bin/sh"] != tar.TypeReg || got["bin/"] != tar.TypeDir {
		t.Errorf("layer entries = %v", got)
	}
}
