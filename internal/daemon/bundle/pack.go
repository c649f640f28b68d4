package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// packConcurrency is fixed, not taken from the machine, so the same tree
// gives the same bundle everywhere.
const packConcurrency = 4

// Pack writes the tree at srcDir to w as a bundle (a tar archive compressed
// with zstd) and returns the bundle's sha256 (hex) and size in bytes, the
// two values a catalog entry records.
//
// The output depends only on the tree's names, contents, modes and link
// structure: entries are in lexical order, every owner is 0:0 and every
// mtime is the Unix epoch. Files with several links become one file and hard
// links to it. Only regular files, directories and symlinks may appear;
// anything else is an error naming it. srcDir itself is not an entry.
func Pack(ctx context.Context, srcDir string, w io.Writer) (string, int64, error) {
	fi, err := os.Stat(srcDir)
	if err != nil {
		return "", 0, fmt.Errorf("packing bundle: %w", err)
	}
	if !fi.IsDir() {
		return "", 0, fmt.Errorf("packing bundle: %s is not a directory", srcDir)
	}
	h := sha256.New()
	cw := &countWriter{}
	enc, err := zstd.NewWriter(io.MultiWriter(w, h, cw),
		zstd.WithEncoderConcurrency(packConcurrency),
		zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return "", 0, fmt.Errorf("packing bundle: starting zstd encoder: %w", err)
	}
	tw := tar.NewWriter(enc)
	links := map[[2]uint64]string{}
	buf := make([]byte, copyBufSize)
	epoch := time.Unix(0, 0)

	walkErr := filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(srcDir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: rel, Mode: tarMode(info.Mode()), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case info.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = target
		case info.Mode().IsRegular():
			hdr.Typeflag = tar.TypeReg
			hdr.Size = info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, seen := links[key]; seen {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
					hdr.Size = 0
				} else {
					links[key] = rel
				}
			}
		default:
			return fmt.Errorf("%s is a %s; bundles hold only files, directories and symlinks", p, info.Mode().Type())
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(tw, ctxReader{ctx, f}, buf)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("%s changed size while being packed", p)
		}
		return nil
	})
	if walkErr == nil {
		walkErr = tw.Close()
	}
	if cerr := enc.Close(); walkErr == nil {
		walkErr = cerr
	}
	if walkErr != nil {
		return "", 0, fmt.Errorf("packing bundle from %s: %w", srcDir, walkErr)
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

func tarMode(m fs.FileMode) int64 {
	v := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	return len(b), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
