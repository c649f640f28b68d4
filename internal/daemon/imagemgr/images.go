package imagemgr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/store"
)

// RegisterRequest names the host files of an unmanaged image.
type RegisterRequest struct {
	Name       string
	Rootfs     string // required: an ext4 image file
	WorkSeed   string // optional
	Kernel     string // kernel name (may be a catalog name pulled later)
	Initrd     string // optional
	ModulesDir string // optional
}

// RegisterImage records an unmanaged image. Its files are checked but never
// opened for writing, moved or deleted by banger.
func (m *Manager) RegisterImage(ctx context.Context, r RegisterRequest) (store.Image, error) {
	if err := ValidName("image", r.Name); err != nil {
		return store.Image{}, err
	}
	if r.Kernel != "" {
		if err := ValidName("kernel", r.Kernel); err != nil {
			return store.Image{}, err
		}
	}
	rootfs, fi, err := checkPath("rootfs", r.Rootfs, false, true)
	if err != nil {
		return store.Image{}, err
	}
	seed, _, err := checkPath("work seed", r.WorkSeed, false, false)
	if err != nil {
		return store.Image{}, err
	}
	initrd, _, err := checkPath("initrd", r.Initrd, false, false)
	if err != nil {
		return store.Image{}, err
	}
	mods, _, err := checkPath("modules dir", r.ModulesDir, true, false)
	if err != nil {
		return store.Image{}, err
	}
	if err := m.checkFree(ctx, "image", r.Name); err != nil {
		return store.Image{}, err
	}
	im := store.Image{
		ID: newID(), Name: r.Name, Managed: false, RootfsPath: rootfs, WorkSeedPath: seed,
		KernelRef: r.Kernel, InitrdPath: initrd, ModulesDir: mods, SizeBytes: fi.Size(),
		OriginKind: store.OriginRegister, OriginRef: rootfs, CreatedAt: m.now().UTC(),
	}
	if err := m.st.PutImage(ctx, im); err != nil {
		return store.Image{}, err
	}
	return im, nil
}

// checkPath makes p absolute and checks that it is a regular file (or a
// directory when dir is set). An empty optional path is allowed.
func checkPath(what, p string, dir, required bool) (string, fs.FileInfo, error) {
	if p == "" {
		if required {
			return "", nil, badInput(fmt.Errorf("a %s path is required", what))
		}
		return "", nil, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", nil, badInput(fmt.Errorf("%s %s: %w", what, p, err))
	}
	if dir && !fi.IsDir() {
		return "", nil, badInput(fmt.Errorf("%s %s is not a directory", what, p))
	}
	if !dir && !fi.Mode().IsRegular() {
		return "", nil, badInput(fmt.Errorf("%s %s is not a regular file", what, p))
	}
	return abs, fi, nil
}

// Image returns one image by name.
func (m *Manager) Image(ctx context.Context, name string) (store.Image, error) {
	return m.st.GetImage(ctx, name)
}

// Images lists every image.
func (m *Manager) Images(ctx context.Context) ([]store.Image, error) { return m.st.ListImages(ctx) }

// RemoveImage deletes an image that no VM uses; a managed image's files go
// with it, an unmanaged image's files stay exactly as they are.
func (m *Manager) RemoveImage(ctx context.Context, name string) error {
	im, err := m.st.GetImage(ctx, name)
	if err != nil {
		return err
	}
	if err := m.st.DeleteImage(ctx, name); err != nil {
		return err
	}
	if im.Managed {
		if err := m.removeManagedDir(m.ImageDir(im.ID)); err != nil {
			return fmt.Errorf("image %q removed, but its files were not: %w", name, err)
		}
	}
	return nil
}

// PromoteImage copies an unmanaged image's files into managed artefacts under
// the state dir, verifies every copy against its source, and then switches
// the image to managed. The user's files are only read.
func (m *Manager) PromoteImage(ctx context.Context, name string, p Progress) (store.Image, error) {
	p = orNop(p)
	im, err := m.st.GetImage(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	if im.Managed {
		return store.Image{}, badInput(fmt.Errorf("image %q is already managed", name))
	}
	dir := m.ImageDir(im.ID)
	tmp := dir + ".promote"
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return store.Image{}, err
	}
	_ = os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return store.Image{}, err
	}
	defer m.track(tmp)() // in progress: a sweep leaves it alone
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()

	var total int64
	files := []struct {
		src  *string
		name string
	}{{&im.RootfsPath, "rootfs.ext4"}, {&im.WorkSeedPath, "work-seed.ext4"}, {&im.InitrdPath, "initrd.img"}}
	for _, f := range files {
		if *f.src != "" {
			fi, err := os.Stat(*f.src)
			if err != nil {
				return store.Image{}, fmt.Errorf("image %q: %w", name, err)
			}
			total += fi.Size()
		}
	}
	p.Phase("copying")
	p.SetTotal(total, store.UnitBytes)
	var rootDigest string
	for _, f := range files {
		if *f.src == "" {
			continue
		}
		dst := filepath.Join(tmp, f.name)
		digest, err := copyVerified(ctx, *f.src, dst, p)
		if err != nil {
			return store.Image{}, fmt.Errorf("promote image %q: %w", name, err)
		}
		if f.name == "rootfs.ext4" {
			rootDigest = digest
		}
		*f.src = filepath.Join(dir, f.name)
	}
	if im.ModulesDir != "" {
		p.Phase("copying modules")
		if err := os.CopyFS(filepath.Join(tmp, "modules"), os.DirFS(im.ModulesDir)); err != nil {
			return store.Image{}, fmt.Errorf("promote image %q: copy modules from %s: %w", name, im.ModulesDir, err)
		}
		im.ModulesDir = filepath.Join(dir, "modules")
	}
	if err := os.Rename(tmp, dir); err != nil {
		return store.Image{}, err
	}
	im.Managed = true
	im.Digest = rootDigest
	if err := m.st.PutImage(ctx, im); err != nil {
		_ = os.RemoveAll(dir)
		return store.Image{}, err
	}
	ok = true
	return im, nil
}

const copyChunk = 1 << 20

// copyVerified copies src to dst, leaving holes where src has runs of zero
// blocks, then re-reads dst and checks that its sha256 equals the one
// computed while reading src. It returns "sha256:<hex>".
func copyVerified(ctx context.Context, src, dst string, p Progress) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, copyChunk)
	zero := make([]byte, copyChunk)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			chunk := buf[:n]
			h.Write(chunk)
			if bytes.Equal(chunk, zero[:n]) {
				// leave a hole
			} else if _, err := out.WriteAt(chunk, off); err != nil {
				return "", fmt.Errorf("write %s: %w", dst, err)
			}
			off += int64(n)
			p.Add(int64(n))
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return "", fmt.Errorf("read %s: %w", src, rerr)
		}
	}
	if err := out.Truncate(off); err != nil {
		return "", err
	}
	if err := out.Sync(); err != nil {
		return "", err
	}
	want := hex.EncodeToString(h.Sum(nil))
	got, err := fileDigest(dst)
	if err != nil {
		return "", err
	}
	if got != "sha256:"+want {
		return "", fmt.Errorf("copy of %s does not match its source (sha256 %s, want %s)", src, got, want)
	}
	return got, nil
}
