package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// fileSize is the size of each generated file.
const fileSize = 8 << 20

var words = []string{"banger", "microvm", "kernel", "rootfs", "bundle", "layer",
	"sparse", "reflink", "socket", "daemon", "guest", "agent", "vsock", "image",
	"config", "ext4", "firecracker", "qemu", "snapshot", "network", "tap", "stream"}

// writeMixedTree fills dir with about total bytes in files of fileSize:
// 40% random (incompressible), 25% zeros, 35% text-like lines, spread over
// a few directories, plus a symlink. The content depends only on seed.
func writeMixedTree(dir string, total int64, seed uint64) error {
	c := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r := rand.New(c)
	n := int(total / fileSize)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%8))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		var src io.Reader
		var kind string
		switch k := i % 20; {
		case k < 8:
			kind, src = "rand", c
		case k < 13:
			kind, src = "zero", zeroReader{}
		default:
			kind, src = "text", &textReader{r: r}
		}
		path := filepath.Join(sub, fmt.Sprintf("%s-%03d", kind, i))
		if err := writeFile(path, io.LimitReader(src, fileSize)); err != nil {
			return err
		}
	}
	return os.Symlink("d00", filepath.Join(dir, "link"))
}

func writeFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.Copy(w, r); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// textReader yields lines of words picked at random, which compress about
// as well as logs or source code.
type textReader struct {
	r   *rand.Rand
	buf []byte
}

func (t *textReader) Read(b []byte) (int, error) {
	for len(t.buf) < len(b) {
		for range 8 + t.r.IntN(8) {
			t.buf = append(t.buf, words[t.r.IntN(len(words))]...)
			t.buf = append(t.buf, ' ')
		}
		t.buf = fmt.Appendf(t.buf, "%d\n", t.r.IntN(100000))
	}
	n := copy(b, t.buf)
	t.buf = t.buf[:copy(t.buf, t.buf[n:])]
	return n, nil
}

// treeSize is the total size of the regular files under dir.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
