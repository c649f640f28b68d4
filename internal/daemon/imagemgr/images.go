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

	"banger/internal/filekind"
	"banger/internal/progress"
	"banger/internal/store"
)

// RegisterRequest names the host files of an unmanaged image.
type RegisterRequest struct {
	Name       string
	Rootfs     string // required: an ext4 image file
	WorkSeed   string // optional: an ext4 image file
	Kernel     string // kernel name: installed, or a catalog kernel pulled later
	Initrd     string // optional: a cpio archive, bare or compressed
	ModulesDir string // optional
	// DefaultKernel gives the kernel when Kernel is empty, by the same rule
	// as OCI pulls (PullOptions.DefaultKernel); nil means Kernel is
	// required.
	DefaultKernel func(context.Context) (string, error)
}

// RegisterImage records an unmanaged image. Every file is checked for what
// it must be (regular files only, symlinks resolved; ext4 images for the
// rootfs and work seed, a cpio initrd) and the kernel must be one banger can
// boot it with, so vm create does not find out later. Files are recorded by
// their resolved paths and are never opened for writing, moved or deleted
// by banger.
func (m *Manager) RegisterImage(ctx context.Context, r RegisterRequest) (store.Image, error) {
	if err := ValidName("image", r.Name); err != nil {
		return store.Image{}, err
	}
	if r.Rootfs == "" {
		return store.Image{}, badInput(errors.New("a rootfs path is required: an ext4 image (make one with mkfs.ext4 -d DIR FILE SIZE)"))
	}
	files := []struct {
		path *string
		role fileRole
	}{{&r.Rootfs, roleRootfs}, {&r.WorkSeed, roleWorkSeed}, {&r.Initrd, roleInitrd}}
	var size int64
	for _, f := range files {
		if *f.path == "" {
			continue
		}
		file, real, fi, err := openChecked(f.role, *f.path)
		if err != nil {
			return store.Image{}, err
		}
		file.Close()
		*f.path = real
		if f.role.flag == roleRootfs.flag {
			size = fi.Size()
		}
	}
	mods, err := checkDir("modules dir", r.ModulesDir)
	if err != nil {
		return store.Image{}, err
	}
	kernel, err := m.registerKernel(ctx, r)
	if err != nil {
		return store.Image{}, err
	}
	if err := m.checkFree(ctx, "image", r.Name); err != nil {
		return store.Image{}, err
	}
	im := store.Image{
		ID: newID(), Name: r.Name, Managed: false, RootfsPath: r.Rootfs, WorkSeedPath: r.WorkSeed,
		KernelRef: kernel, InitrdPath: r.Initrd, ModulesDir: mods, SizeBytes: size,
		OriginKind: store.OriginRegister, OriginRef: r.Rootfs, CreatedAt: m.now().UTC(),
	}
	if err := m.st.PutImage(ctx, im); err != nil {
		return store.Image{}, err
	}
	return im, nil
}

// registerKernel is the kernel a registered image boots: r.Kernel, else
// r.DefaultKernel's; it must be installed or in the kernel catalog (vm
// create pulls a catalog kernel that is missing).
func (m *Manager) registerKernel(ctx context.Context, r RegisterRequest) (string, error) {
	kernel, what := r.Kernel, "--kernel"
	if kernel == "" {
		if r.DefaultKernel == nil {
			return "", badInput(fmt.Errorf("image %q needs a kernel to boot: give one with --kernel NAME (banger kernel ls lists the installed ones; a catalog kernel is pulled when a VM first needs it)", r.Name))
		}
		k, err := r.DefaultKernel(ctx)
		if err != nil {
			return "", err
		}
		kernel, what = k, "the default kernel"
	}
	return m.bootKernel(ctx, kernel, what)
}

// CheckFiles checks an unmanaged image's files again, as register did: the
// user may have replaced one since (with a link to a device, say). vm create
// calls it before it reads them; a managed image's files are banger's own.
func (m *Manager) CheckFiles(im store.Image) error {
	if im.Managed {
		return nil
	}
	for _, f := range []struct {
		path string
		role fileRole
	}{{im.RootfsPath, roleRootfs}, {im.WorkSeedPath, roleWorkSeed}, {im.InitrdPath, roleInitrd}} {
		if f.path == "" {
			continue
		}
		file, _, _, err := openChecked(f.role, f.path)
		if err != nil {
			return fmt.Errorf("image %q: %w", im.Name, err)
		}
		file.Close()
	}
	if _, err := checkDir("modules dir", im.ModulesDir); err != nil {
		return fmt.Errorf("image %q: %w", im.Name, err)
	}
	return nil
}

// fileRole is what a file of an image is for: its flag, what it is called
// in errors, the kind it must be and how to make one.
type fileRole struct {
	flag, what, kind, hint string
	check                  func(f *os.File, size int64) error
}

var (
	roleRootfs = fileRole{"rootfs", "a root filesystem", "an ext4 image",
		"make one with mkfs.ext4 -d DIR FILE SIZE", checkExt4}
	roleWorkSeed = fileRole{"work seed", "a work seed", "an ext4 image",
		"make one with mkfs.ext4 -d DIR FILE SIZE", checkExt4}
	roleInitrd = fileRole{"initrd", "an initrd", "an initrd",
		"make one with: (cd DIR && find . | cpio -o -H newc | gzip) > FILE", checkInitrd}
)

func checkExt4(f *os.File, size int64) error {
	_, err := filekind.Ext4(f, size)
	return err
}

func checkInitrd(f *os.File, _ int64) error {
	_, err := filekind.Initrd(io.NewSectionReader(f, 0, 1<<62))
	return err
}

// openChecked opens the file at p for role, refusing anything but a regular
// file of the right kind (symlinks resolved first), and returns it open with
// its resolved path and info. Reading it gives what was checked, even if
// the path changes later.
func openChecked(role fileRole, p string) (*os.File, string, fs.FileInfo, error) {
	f, real, fi, err := filekind.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil, badInput(fmt.Errorf("%s %s: %w", role.flag, p, err))
	}
	if err != nil {
		return nil, "", nil, badInput(fmt.Errorf("refusing %s as %s: %w", p, role.what, err))
	}
	if err := role.check(f, fi.Size()); err != nil {
		f.Close()
		return nil, "", nil, badInput(fmt.Errorf("refusing %s as %s: it is not %s (%v); %s", p, role.what, role.kind, err, role.hint))
	}
	return f, real, fi, nil
}

// checkDir resolves the directory p (empty is allowed) and checks that it
// is a directory.
func checkDir(what, p string) (string, error) {
	if p == "" {
		return "", nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", badInput(fmt.Errorf("%s %s: %w", what, p, err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", badInput(fmt.Errorf("%s %s: %w", what, p, err))
	}
	if !fi.IsDir() {
		return "", badInput(fmt.Errorf("%s %s is %s, not a directory", what, p, filekind.Describe(fi.Mode())))
	}
	return real, nil
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
	p = progress.OrNop(p)
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

	// The user's files may have changed since they were registered: check
	// them again, and copy from the very files that were checked.
	files := []struct {
		src  *string
		role fileRole
		name string
		f    *os.File
	}{{&im.RootfsPath, roleRootfs, "rootfs.ext4", nil}, {&im.WorkSeedPath, roleWorkSeed, "work-seed.ext4", nil}, {&im.InitrdPath, roleInitrd, "initrd.img", nil}}
	defer func() {
		for _, f := range files {
			if f.f != nil {
				f.f.Close()
			}
		}
	}()
	var total int64
	for i := range files {
		f := &files[i]
		if *f.src == "" {
			continue
		}
		file, _, fi, err := openChecked(f.role, *f.src)
		if err != nil {
			return store.Image{}, fmt.Errorf("promote image %q: %w", name, err)
		}
		f.f = file
		total += fi.Size()
	}
	if im.ModulesDir != "" {
		if _, err := checkDir("modules dir", im.ModulesDir); err != nil {
			return store.Image{}, fmt.Errorf("promote image %q: %w", name, err)
		}
	}
	p.Phase("copying")
	p.SetTotal(total, store.UnitBytes)
	var rootDigest string
	for _, f := range files {
		if f.f == nil {
			continue
		}
		dst := filepath.Join(tmp, f.name)
		digest, err := copyVerified(ctx, f.f, dst, p)
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
	if err := place(tmp, dir); err != nil {
		return store.Image{}, err
	}
	im.Managed = true
	im.Digest = rootDigest
	if err := m.st.PutImage(ctx, im); err != nil {
		_ = os.RemoveAll(dir)
		return store.Image{}, err
	}
	commit(dir)
	ok = true
	return im, nil
}

const copyChunk = 1 << 20

// copyVerified copies in, from its start, to dst, leaving holes where it has
// runs of zero blocks, then re-reads dst and checks that its sha256 equals
// the one computed while reading in. It returns "sha256:<hex>".
func copyVerified(ctx context.Context, in *os.File, dst string, p Progress) (string, error) {
	src := in.Name()
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("read %s: %w", src, err)
	}
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
