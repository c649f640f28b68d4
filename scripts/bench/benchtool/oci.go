package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/daemon/ociimage"
)

// benchOCI imports a 4-layer, ~200 MB image from go-containerregistry's
// in-process registry with ociimage.Import, against skopeo copy + umoci
// unpack + mkfs.ext4 -d of the same image into an image of the same size.
func benchOCI(ctx context.Context, dir string, runs int) error {
	progress("oci: building and pushing a 4-layer image")
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/bench/img:latest"
	raw, err := pushImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("push test image: %w", err)
	}

	imp := &series{name: "ociimage.Import"}
	base := &series{name: "skopeo copy + umoci raw unpack + mkfs.ext4 -d (banger's flags) + sync"}
	steps := map[string]*series{}
	stepNames := []string{"skopeo copy", "umoci raw unpack", "mkfs.ext4 -d -b 4096 -I 256 -N … && sync -f"}
	for _, n := range stepNames {
		steps[n] = &series{name: n}
	}
	why := ""
	if err := need("skopeo", "umoci", "mkfs.ext4"); err != nil {
		why = err.Error()
	}
	dest := filepath.Join(dir, "imported.ext4")
	var size int64
	for i := range runs {
		progress("oci: run %d/%d", i+1, runs)
		os.Remove(dest)
		d, err := timeIt(func() error {
			res, err := ociimage.Import(ctx, ref, dest, ociimage.Options{Insecure: true, WorkDir: dir}, nil)
			size = res.Size
			return err
		})
		if err != nil {
			return fmt.Errorf("ociimage.Import %s: %w", ref, err)
		}
		imp.add(d)
		os.Remove(dest)
		if why != "" {
			continue
		}
		oci, bundle, img := filepath.Join(dir, "oci"), filepath.Join(dir, "bundle"), filepath.Join(dir, "base.ext4")
		for _, p := range []string{oci, bundle, img} {
			os.RemoveAll(p)
		}
		scripts := []string{
			fmt.Sprintf("skopeo copy -q --insecure-policy --src-tls-verify=false docker://%s oci:%s:latest", ref, q(oci)),
			// raw unpack: the root filesystem only, no runtime config
			// or mtree manifest, as Import.
			fmt.Sprintf("mkdir -p %[2]s && umoci raw unpack --image %[1]s:latest %[2]s/rootfs", q(oci), q(bundle)),
			// The flags ociimage passes (internal/daemon/ociimage/mkfs.go):
			// 4 KiB blocks, 256-byte inodes, entries + 25%% + 8192 inodes
			// (at least one per 16 KiB), no reserved blocks; then the
			// image is flushed, as Import's atomic commit does.
			fmt.Sprintf("n=$(find %[2]s/rootfs | wc -l); n=$((n + n/4 + 8192)); m=$((%[1]d / 16384)); [ $n -gt $m ] || n=$m; "+
				"truncate -s %[1]d %[3]s && mkfs.ext4 -q -F -L rootfs -b 4096 -I 256 -N $n -m 0 -E root_owner=0:0 -d %[2]s/rootfs %[3]s && sync -f %[3]s",
				size, q(bundle), q(img)),
		}
		var total time.Duration
		syscall.Sync()
		for j, s := range scripts {
			start := time.Now()
			if err := sh(ctx, s); err != nil {
				if i == 0 {
					why = err.Error()
					break
				}
				return err
			}
			d := time.Since(start)
			steps[stepNames[j]].add(d)
			total += d
		}
		if why == "" {
			base.add(total)
		}
		for _, p := range []string{oci, bundle, img} {
			os.RemoveAll(p)
		}
	}
	note("OCI import: 4 gzip layers, %d MiB uncompressed content, image %d MiB (the baseline's mkfs gets the same size); registry: go-containerregistry pkg/registry over plain HTTP in this process; %d runs each, interleaved.",
		raw>>20, size>>20, runs)
	if why != "" {
		note("Baseline not measured: %s", why)
		printTable("OCI import", raw, "", imp)
		return nil
	}
	printTable("OCI import (pull, unpack, ext4 image)", raw, base.name, imp, base)
	var ratios []float64
	for i := range min(len(imp.d), len(base.d)) {
		ratios = append(ratios, base.d[i].Seconds()/imp.d[i].Seconds())
	}
	fmt.Printf("\nPaired speed-ups (baseline / Import, same run): %s\n", ratioSummary(ratios))
	printTable("Baseline steps", 0, "", steps[stepNames[0]], steps[stepNames[1]], steps[stepNames[2]])
	return nil
}

// pushImage writes a linux/amd64 image of four ~48 MiB layers of mixed
// content (the last one whites out a file of the first) to ref and returns
// the uncompressed size of its files.
func pushImage(ctx context.Context, ref string) (int64, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return 0, err
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin:/bin"}},
	})
	if err != nil {
		return 0, err
	}
	var total int64
	for i := range 4 {
		data, n, err := layerTar(i)
		if err != nil {
			return 0, err
		}
		total += n
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithCompressionLevel(gzip.BestSpeed))
		if err != nil {
			return 0, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return 0, err
		}
	}
	return total, remote.Write(r, img, remote.WithContext(ctx))
}

func layerTar(i int) ([]byte, int64, error) {
	dir, err := os.MkdirTemp("", "bench-layer-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	if err := writeMixedTree(dir, 6*fileSize, uint64(10+i)); err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var n int64
	prefix := fmt.Sprintf("layer%d/", i)
	hdr := func(h *tar.Header) error { h.ModTime = time.Unix(0, 0); return tw.WriteHeader(h) }
	if err := hdr(&tar.Header{Name: prefix, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		return nil, 0, err
	}
	if i == 0 {
		for _, d := range []string{"bin/", "etc/", "usr/", "usr/bin/"} {
			if err := hdr(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				return nil, 0, err
			}
		}
	}
	if i == 3 {
		if err := hdr(&tar.Header{Name: "layer0/d00/.wh.rand-000", Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
			return nil, 0, err
		}
	}
	err = walkFiles(dir, func(rel string, fi os.FileInfo, path string) error {
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = prefix + rel
		if fi.Mode()&os.ModeSymlink != 0 {
			if h.Linkname, err = os.Readlink(path); err != nil {
				return err
			}
		}
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if err := hdr(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		c, err := io.Copy(tw, f)
		n += c
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n, nil
}

func walkFiles(root string, fn func(rel string, fi os.FileInfo, path string) error) error {
	return filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel), fi, path)
	})
}
