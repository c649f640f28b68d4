package imagemgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/kernelprep"
	"banger/internal/progress"
	"banger/internal/store"
)

// ImportKernel turns a linux-image .deb (or an extracted tree with boot/ and
// lib/modules/) into a managed kernel. An empty name is derived from the
// kernel release. Nothing is registered, and no file is left, on failure.
func (m *Manager) ImportKernel(ctx context.Context, name, src string, p Progress) (store.Kernel, error) {
	return m.importKernel(ctx, name, src, store.OriginImport, "", p)
}

func (m *Manager) importKernel(ctx context.Context, name, src, originKind, originRef string, p Progress) (store.Kernel, error) {
	p = progress.OrNop(p)
	if name != "" {
		if err := ValidName("kernel", name); err != nil {
			return store.Kernel{}, err
		}
		if err := m.checkFree(ctx, "kernel", name); err != nil {
			return store.Kernel{}, err
		}
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return store.Kernel{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		return store.Kernel{}, badInput(fmt.Errorf("kernel source %s: %w", src, err))
	}
	init, err := m.initBin()
	if err != nil {
		return store.Kernel{}, fmt.Errorf("find the init binary for the initramfs: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(m.root, "kernels"), 0o700); err != nil {
		return store.Kernel{}, err
	}
	id := newID()
	dir := m.KernelDir(id)
	work, done, err := m.workDir("kernel-import")
	if err != nil {
		return store.Kernel{}, err
	}
	defer done()
	p.Phase("preparing kernel")
	built := filepath.Join(work, "kernel")
	if _, err := kernelprep.Prepare(ctx, abs, built, kernelprep.Options{Init: init, Progress: func(step string) { p.Phase(step) }}); err != nil {
		return store.Kernel{}, fmt.Errorf("import kernel from %s: %w", src, err)
	}
	if err := place(built, dir); err != nil {
		return store.Kernel{}, fmt.Errorf("import kernel from %s: move it into place: %w", src, err)
	}
	keep := false
	defer func() {
		if !keep {
			_ = m.removeManagedDir(dir)
		}
	}()
	art, err := kernelprep.ReadArtefacts(dir)
	if err != nil {
		return store.Kernel{}, fmt.Errorf("import kernel from %s: %w", src, err)
	}
	if name == "" {
		name = nameFromRelease(art.Release)
		if err := m.checkFree(ctx, "kernel", name); err != nil {
			return store.Kernel{}, fmt.Errorf("%w (or give another name with --name)", err)
		}
	}
	if originRef == "" {
		originRef = abs
	}
	p.Phase("hashing vmlinux")
	digest, err := fileDigest(art.Vmlinux)
	if err != nil {
		return store.Kernel{}, err
	}
	k := store.Kernel{
		ID: id, Name: name, VmlinuxPath: art.Vmlinux, InitrdPath: art.Initrd, Modules: art.ModulesDir,
		Version: art.Release, Digest: digest, Managed: true,
		OriginKind: originKind, OriginRef: originRef, CreatedAt: m.now().UTC(),
	}
	if err := m.st.PutKernel(ctx, k); err != nil {
		return store.Kernel{}, err
	}
	commit(dir)
	keep = true
	return k, nil
}

// Kernel returns one kernel by name.
func (m *Manager) Kernel(ctx context.Context, name string) (store.Kernel, error) {
	return m.st.GetKernel(ctx, name)
}

// Kernels lists every kernel.
func (m *Manager) Kernels(ctx context.Context) ([]store.Kernel, error) { return m.st.ListKernels(ctx) }

// RemoveKernel deletes a kernel that no VM uses; a managed kernel's files go
// with it, an unmanaged kernel's files stay.
func (m *Manager) RemoveKernel(ctx context.Context, name string) error {
	k, err := m.st.GetKernel(ctx, name)
	if err != nil {
		return err
	}
	if err := m.st.DeleteKernel(ctx, name); err != nil {
		return err
	}
	if k.Managed {
		if err := m.removeManagedDir(m.KernelDir(k.ID)); err != nil {
			return fmt.Errorf("kernel %q removed, but its files were not: %w", name, err)
		}
	}
	return nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
