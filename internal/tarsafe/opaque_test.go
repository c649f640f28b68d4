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
