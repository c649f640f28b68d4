package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"banger/internal/daemon/bundle"
)

// benchBundle packs a ~256 MiB mixed tree with bundle.Pack and fetches it
// from a local HTTP server with bundle.Fetch, each against the shell
// pipeline doing the same work, runs interleaved.
func benchBundle(ctx context.Context, dir string, runs int) error {
	if err := need("curl", "zstd", "tar", "sha256sum"); err != nil {
		return err
	}
	tree := filepath.Join(dir, "tree")
	progress("bundle: writing a 256 MiB tree in %s", tree)
	if err := writeMixedTree(tree, 256<<20, 1); err != nil {
		return fmt.Errorf("write test tree: %w", err)
	}
	raw, err := treeSize(tree)
	if err != nil {
		return err
	}

	// Pack.
	packed := filepath.Join(dir, "bundle.tar.zst")
	pack := &series{name: "bundle.Pack"}
	basePack := &series{name: "tar | zstd -3 -T4 | tee >(sha256sum)"}
	var sum string
	var size int64
	for i := range runs {
		progress("bundle: pack run %d/%d", i+1, runs)
		d, err := timeIt(func() error {
			f, err := os.Create(packed)
			if err != nil {
				return err
			}
			sum, size, err = bundle.Pack(ctx, tree, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("bundle.Pack: %w", err)
		}
		pack.add(d)
		out := filepath.Join(dir, "baseline.tar.zst")
		d, err = timeIt(func() error {
			return sh(ctx, fmt.Sprintf(`tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C %s . |
				zstd -q -3 -T4 | tee >(sha256sum >/dev/null) >%s`, q(tree), q(out)))
		})
		if err != nil {
			return err
		}
		basePack.add(d)
		os.Remove(out)
	}

	// Fetch, from an HTTP server in this process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/bundle.tar.zst"

	fetch := &series{name: "bundle.Fetch"}
	baseFetch := &series{name: "curl | tee >(sha256sum) | zstd -dc | tar -x"}
	baseFetchSync := &series{name: "same + sync -f (Fetch syncs before rename)"}
	src := bundle.Source{URL: url, SHA256: sum, Size: size}
	dest := filepath.Join(dir, "out", "dest")
	for i := range runs {
		progress("bundle: fetch run %d/%d", i+1, runs)
		os.RemoveAll(filepath.Join(dir, "out"))
		d, err := timeIt(func() error {
			_, err := bundle.Fetch(ctx, src, dest, nil)
			return err
		})
		if err != nil {
			return fmt.Errorf("bundle.Fetch: %w", err)
		}
		fetch.add(d)
		got, err := treeSize(dest)
		if fi, serr := os.Stat(filepath.Join(dest, bundle.MarkerName)); serr == nil {
			got -= fi.Size() // Fetch's own marker file
		}
		if err != nil || got != raw {
			return fmt.Errorf("fetched tree holds %d bytes (%v), want %d", got, err, raw)
		}
		for _, s := range []*series{baseFetch, baseFetchSync} {
			os.RemoveAll(filepath.Join(dir, "out"))
			syncCmd := ""
			if s == baseFetchSync {
				syncCmd = "; sync -f " + q(dest)
			}
			d, err = timeIt(func() error {
				return sh(ctx, fmt.Sprintf(`mkdir -p %[1]s; curl -sf %[2]s | tee >(sha256sum >/dev/null) | zstd -dcq | tar -x -C %[1]s%[3]s`,
					q(dest), q(url), syncCmd))
			})
			if err != nil {
				return err
			}
			s.add(d)
		}
	}
	os.RemoveAll(filepath.Join(dir, "out"))

	note("Bundle: %d MiB of files (40%% random, 25%% zeros, 35%% text), %d MiB compressed; %d runs each, interleaved. MiB/s are of the uncompressed tree.",
		raw>>20, size>>20, runs)
	printTable("Pack", raw, basePack.name, pack, basePack)
	printTable("Fetch (pull from local HTTP, verify sha256, unpack)", raw, baseFetch.name, fetch, baseFetch, baseFetchSync)
	return nil
}
