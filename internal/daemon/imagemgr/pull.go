package imagemgr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"banger/internal/catalog"
	"banger/internal/childproc"
	"banger/internal/daemon/bundle"
	"banger/internal/kernelprep"
	"banger/internal/progress"
	"banger/internal/store"
)

// Catalogs are what pulls resolve names against.
type Catalogs struct {
	Images, Kernels *catalog.Catalog
	// BaseURL resolves relative bundle URLs (config catalog_base_url).
	BaseURL string
}

// SetCatalogs gives the manager its catalogs. Call it before any pull.
func (m *Manager) SetCatalogs(c Catalogs) { m.cat = c }

// PullKernel makes the catalog kernel name available: at once when it is
// already there, else from its published bundle, else (no bundle, or the
// download failed) built locally from its recipe, saying so in the progress.
func (m *Manager) PullKernel(ctx context.Context, name string, p Progress) (store.Kernel, error) {
	p = progress.OrNop(p)
	unlock := m.pulls.MustLock("kernel/" + name)
	defer unlock()
	if k, err := m.st.GetKernel(ctx, name); err == nil {
		return k, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Kernel{}, err
	}
	if m.cat.Kernels == nil {
		return store.Kernel{}, errors.New("no kernel catalog loaded")
	}
	e, ok := m.cat.Kernels.Lookup(name)
	if !ok {
		return store.Kernel{}, badInput(fmt.Errorf("kernel %q is neither installed nor in the catalog (catalog kernels: %s); import one with `banger kernel import PATH`",
			name, strings.Join(m.cat.Kernels.Names(), ", ")))
	}
	if e.Bundle != nil {
		k, err := m.fetchKernelBundle(ctx, e, p)
		if err == nil {
			return k, nil
		}
		if e.Build == nil || ctx.Err() != nil {
			return store.Kernel{}, err
		}
		p.Phase(fmt.Sprintf("bundle unavailable (%v); building locally", err))
	} else if e.Build != nil {
		p.Phase("no published bundle; building locally")
	}
	if e.Build == nil {
		return store.Kernel{}, fmt.Errorf("kernel %q has neither a bundle nor a build recipe", name)
	}
	switch e.Build.Kind {
	case "apt-kernel":
		return m.buildAptKernel(ctx, e, p)
	}
	return store.Kernel{}, fmt.Errorf("kernel %q: this banger cannot run build recipes of kind %q", name, e.Build.Kind)
}

func (m *Manager) fetchKernelBundle(ctx context.Context, e catalog.Entry, p Progress) (store.Kernel, error) {
	url, err := catalog.ResolveURL(m.cat.BaseURL, *e.Bundle)
	if err != nil {
		return store.Kernel{}, err
	}
	id := newID()
	dir := m.KernelDir(id)
	p.Phase("downloading " + url)
	if err := m.fetchBundle(ctx, bundle.Source{URL: url, SHA256: e.Bundle.SHA256, Size: e.Bundle.Size}, dir, p); err != nil {
		return store.Kernel{}, err
	}
	art, err := kernelprep.ReadArtefacts(dir)
	if err != nil {
		_ = m.removeManagedDir(dir)
		return store.Kernel{}, fmt.Errorf("kernel bundle %s: %w", url, err)
	}
	k := store.Kernel{ID: id, Name: e.Name, VmlinuxPath: art.Vmlinux, InitrdPath: art.Initrd, Modules: art.ModulesDir,
		Version: art.Release, Digest: "sha256:" + e.Bundle.SHA256, Managed: true,
		OriginKind: store.OriginCatalog, OriginRef: url, CreatedAt: m.now().UTC()}
	if err := m.st.PutKernel(ctx, k); err != nil {
		_ = m.removeManagedDir(dir)
		return store.Kernel{}, err
	}
	commit(dir)
	return k, nil
}

// buildAptKernel downloads the Debian kernel package named by the recipe
// with the host's own apt configuration and imports it.
func (m *Manager) buildAptKernel(ctx context.Context, e catalog.Entry, p Progress) (store.Kernel, error) {
	pkg := e.Build.Params["package"]
	if pkg == "" {
		return store.Kernel{}, fmt.Errorf("kernel %q: apt-kernel recipe names no package", e.Name)
	}
	tmp, done, err := m.workDir("apt")
	if err != nil {
		return store.Kernel{}, err
	}
	defer done()
	p.Phase("resolving " + pkg + " with apt")
	real, err := aptResolve(ctx, pkg)
	if err != nil {
		return store.Kernel{}, err
	}
	p.Phase("downloading " + real + " with apt-get")
	deb, err := aptDownload(ctx, real, tmp)
	if err != nil {
		return store.Kernel{}, err
	}
	k, err := m.importKernel(ctx, e.Name, deb, store.OriginCatalog, "apt:"+real, p)
	if err != nil {
		return store.Kernel{}, err
	}
	return k, nil
}

// aptResolve follows a metapackage such as linux-image-amd64 to the kernel
// package it depends on; a real kernel package resolves to itself.
func aptResolve(ctx context.Context, pkg string) (string, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", errors.New("this host has no apt: download a linux-image .deb yourself and run `banger kernel import PATH`")
	}
	out, err := childproc.Output(exec.CommandContext(ctx, "apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances", pkg))
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (is %s known to apt? try `apt-get update`)", pkg, err, pkg)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") && !strings.HasPrefix(f[1], "<") {
			return f[1], nil
		}
	}
	return pkg, nil
}

func aptDownload(ctx context.Context, pkg, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := childproc.CombinedOutput(cmd); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, strings.TrimSpace(lastLine(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files, want 1", pkg, len(debs))
	}
	return debs[0], nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// fetchBundle fetches src into a work dir and renames the result to dir
// (which must not exist), so that a daemon killed mid-download leaves its
// partial tree where the next start sweeps it.
func (m *Manager) fetchBundle(ctx context.Context, src bundle.Source, dir string, p Progress) error {
	work, done, err := m.workDir("bundle")
	if err != nil {
		return err
	}
	defer done()
	fetched := filepath.Join(work, "bundle")
	if _, err := bundle.Fetch(ctx, src, fetched, p); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := place(fetched, dir); err != nil {
		return fmt.Errorf("move bundle %s into place at %s: %w", src.URL, dir, err)
	}
	return nil
}
