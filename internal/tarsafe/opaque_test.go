package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// TestManyOpaqueWhiteouts: every opaque whiteout walked all that the
// stream had put under its directory, so a layer of n files and n
// opaque whiteouts of the root cost n*n directory reads: a few megabytes
// of layer kept an import as root busy for hours. Each is now done once.
func TestManyOpaqueWhiteouts(t *testing.T) {
	const n = 4000
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755})
	for i := range n {
		add(&tar.Header{Name: fmt.Sprintf("a/d%d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for i := range n {
		add(&tar.Header{Name: ".wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644})
		add(&tar.Header{Name: fmt.Sprintf("a/d%d/.wh..wh..opq", n-1-i), Typeflag: tar.TypeReg, Mode: 0o644})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	opts := policies(jail{})["image"]
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Extract(ctx, &buf, t.TempDir(), opts); err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("%d opaque whiteouts over %d directories took %v", 2*n, n, took)
	}
}

// TestManyWhiteouts: each removal (a whiteout, a directory replaced)
// scanned the whole cache of known directories, up to 65,536 names, so a
// layer of many directories and many whiteouts cost their product.
func TestManyWhiteouts(t *testing.T) {
	const n = 30000
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		add(&tar.Header{Name: fmt.Sprintf("d%d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for i := range n {
		add(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644})
		add(&tar.Header{Name: fmt.Sprintf(".wh.f%d", i), Typeflag: tar.TypeReg, Mode: 0o644})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	if err := Extract(ctx, &buf, t.TempDir(), policies(jail{})["image"]); err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	if took := time.Since(start); took > 45*time.Second {
		t.Fatalf("%d whiteouts beside %d directories took %v", n, n, took)
	}
}
