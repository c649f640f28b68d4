package ociimage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"banger/internal/progress"
)

// UnitBytes is the progress unit of the download, the only unit this
// package reports in.
const UnitBytes = progress.Bytes

// pullLayers applies the layers in order onto a's tree. The first layer is
// streamed straight from the registry into the applier; meanwhile a fetcher
// downloads the following layers' compressed blobs, in order, into work so
// that the next layer is on disk by the time the current one is applied. At
// most one finished blob waits ahead of the applier.
func pullLayers(ctx context.Context, layers []v1.Layer, work string, a *applier, prog *lockedProgress) error {
	var total int64
	names := make([]string, len(layers))
	for i, l := range layers {
		sz, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %d: size: %w", i+1, err)
		}
		total += sz
		names[i] = fmt.Sprintf("%d/%d", i+1, len(layers))
		if d, err := l.Digest(); err == nil {
			names[i] += " (" + d.String() + ")"
		}
	}
	prog.SetTotal(total, UnitBytes)
	if len(layers) == 0 {
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	type blob struct {
		path string
		err  error
	}
	ahead := make(chan blob, 1)
	if len(layers) > 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ahead)
			for i := 1; i < len(layers); i++ {
				p, err := spool(ctx, layers[i], filepath.Join(work, fmt.Sprintf("blob-%d", i)), prog)
				if err != nil {
					err = fmt.Errorf("download layer %s: %w", names[i], err)
				}
				select {
				case ahead <- blob{p, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}

	rc, err := layers[0].Compressed()
	if err != nil {
		return fmt.Errorf("download layer %s: %w", names[0], err)
	}
	err = applyCompressed(ctx, a, &countingReader{r: rc, prog: prog}, names[0])
	_ = rc.Close()
	if err != nil {
		return err
	}
	for i := 1; i < len(layers); i++ {
		var b blob
		select {
		case b = <-ahead:
		case <-ctx.Done():
			return ctx.Err()
		}
		if b.err != nil {
			return b.err
		}
		f, err := os.Open(b.path)
		if err != nil {
			return fmt.Errorf("layer %s: %w", names[i], err)
		}
		err = applyCompressed(ctx, a, f, names[i])
		_ = f.Close()
		_ = os.Remove(b.path)
		if err != nil {
			return err
		}
	}
	return nil
}

// spool downloads a layer's compressed blob to path. The registry client
// checks the blob's digest when the stream reaches its end.
func spool(ctx context.Context, l v1.Layer, path string, prog *lockedProgress) (string, error) {
	rc, err := l.Compressed()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, &countingReader{r: ctxReader{ctx, rc}, prog: prog})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return path, nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// applyCompressed decompresses a layer blob (gzip, zstd or plain tar, told
// apart by their magic bytes) into the applier, then reads the blob to its end
// so the registry client's digest check runs.
func applyCompressed(ctx context.Context, a *applier, blob io.Reader, name string) error {
	br := bufio.NewReaderSize(ctxReader{ctx, blob}, 1<<20)
	magic, _ := br.Peek(4)
	var tarStream io.Reader = br
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("layer %s: gzip: %w", name, err)
		}
		defer zr.Close()
		tarStream = zr
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("layer %s: zstd: %w", name, err)
		}
		defer zr.Close()
		tarStream = zr
	}
	if err := a.apply(ctx, tarStream, name); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, tarStream); err != nil {
		return fmt.Errorf("layer %s: read to end: %w", name, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("layer %s: read to end: %w", name, err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type countingReader struct {
	r    io.Reader
	prog *lockedProgress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.prog.Add(int64(n))
	return n, err
}
