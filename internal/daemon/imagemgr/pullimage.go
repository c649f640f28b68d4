package imagemgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/catalog"
	"banger/internal/daemon/bundle"
	"banger/internal/progress"
	"banger/internal/store"
)

// Builder makes a catalog image locally from its recipe: it writes at least
// rootfs.ext4 (and optionally work-seed.ext4) into dir.
type Builder func(ctx context.Context, e catalog.Entry, dir string, p Progress) error

// OCIImporter turns an OCI reference into dir/rootfs.ext4 and returns the
// manifest digest and the size written.
type OCIImporter interface {
	// Digest resolves ref without pulling layers.
	Digest(ctx context.Context, ref string, insecure bool) (string, error)
	Import(ctx context.Context, ref, dest string, insecure bool, p Progress) (digest string, size int64, err error)
}

// SetBuilders registers local builders by recipe kind, and the OCI importer.
func (m *Manager) SetBuilders(builders map[string]Builder, oci OCIImporter) {
	m.builders = builders
	m.oci = oci
}

// PullOptions adjust PullImage.
type PullOptions struct {
	// Name for an OCI image (default: derived from the reference).
	Name     string
	Insecure bool
	// Kernel is the kernel an OCI image boots, as the user named it
	// (--kernel): an installed kernel or a kernel catalog entry. Catalog
	// images name their own kernel, so it is refused for them.
	Kernel string
	// DefaultKernel gives the kernel an OCI image boots when Kernel is
	// empty; it is asked only when a new image needs one (re-pulling an
	// image keeps the kernel it has). The caller chooses the rule (the
	// daemon: the kernel of its default image); nil means no default.
	DefaultKernel func(context.Context) (string, error)
}

// CheckPull refuses, before anything is downloaded or written, a pull that
// PullImage would refuse for its kernel: --kernel with a catalog image, or an
// OCI image whose kernel (given or default) is neither installed nor in the
// kernel catalog. It returns the kernel an OCI image would record.
func (m *Manager) CheckPull(ctx context.Context, ref string, o PullOptions) (string, error) {
	if m.IsCatalogImage(ref) {
		if o.Kernel != "" {
			e, _ := m.cat.Images.Lookup(ref)
			return "", badInput(fmt.Errorf("--kernel %s: %q is a catalog image, which boots the kernel its catalog entry names (%s); --kernel is for OCI images only", o.Kernel, ref, e.Kernel))
		}
		return "", nil
	}
	kernel, what := o.Kernel, "--kernel"
	if kernel == "" {
		// An image already pulled from ref keeps its kernel.
		name := o.Name
		if name == "" {
			name = OCIName(ref)
		}
		if im, err := m.st.GetImage(ctx, name); err == nil && im.OriginKind == store.OriginOCI && im.OriginRef == ref && im.KernelRef != "" {
			return im.KernelRef, nil
		}
		if o.DefaultKernel == nil {
			return "", badInput(fmt.Errorf("OCI image %s needs a kernel and there is no default: give one with --kernel NAME (banger kernel ls lists them)", ref))
		}
		k, err := o.DefaultKernel(ctx)
		if err != nil {
			return "", err
		}
		kernel, what = k, "the default kernel"
	}
	return m.bootKernel(ctx, kernel, what)
}

// bootKernel checks that kernel, as what named it (--kernel, the default
// kernel), can be booted: installed, or in the kernel catalog (a VM's
// start pulls a catalog kernel that is missing).
func (m *Manager) bootKernel(ctx context.Context, kernel, what string) (string, error) {
	if err := ValidName("kernel", kernel); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	_, err := m.st.GetKernel(ctx, kernel)
	switch {
	case err == nil:
		return kernel, nil
	case !errors.Is(err, store.ErrNotFound):
		return "", err
	}
	if m.cat.Kernels != nil {
		if _, ok := m.cat.Kernels.Lookup(kernel); ok {
			return kernel, nil
		}
	}
	return "", badInput(fmt.Errorf("%s %q is neither an installed kernel (%s) nor in the kernel catalog (%s): import it first (banger kernel import --name %s PATH) or name another with --kernel",
		what, kernel, m.installedKernels(ctx), m.catalogKernels(), kernel))
}

func (m *Manager) installedKernels(ctx context.Context) string {
	ks, err := m.st.ListKernels(ctx)
	if err != nil || len(ks) == 0 {
		return "none installed"
	}
	names := make([]string, 0, len(ks))
	for _, k := range ks {
		names = append(names, k.Name)
	}
	return "installed: " + strings.Join(names, ", ")
}

func (m *Manager) catalogKernels() string {
	if m.cat.Kernels == nil || len(m.cat.Kernels.Names()) == 0 {
		return "it has none"
	}
	return "catalog: " + strings.Join(m.cat.Kernels.Names(), ", ")
}

// ImageKernel is the kernel the image name boots: the catalog entry's kernel
// for a catalog name, else the kernel of the installed image of that name
// (empty when it names none). The error wraps store.ErrNotFound when name is
// neither.
func (m *Manager) ImageKernel(ctx context.Context, name string) (string, error) {
	if m.cat.Images != nil {
		if e, ok := m.cat.Images.Lookup(name); ok {
			return e.Kernel, nil
		}
	}
	im, err := m.st.GetImage(ctx, name)
	if err != nil {
		return "", err
	}
	return im.KernelRef, nil
}

// IsCatalogImage reports whether ref names an image catalog entry.
func (m *Manager) IsCatalogImage(ref string) bool {
	if m.cat.Images == nil {
		return false
	}
	_, ok := m.cat.Images.Lookup(ref)
	return ok
}

// PullImage makes an image available: a catalog name from its bundle or, when
// there is none or it cannot be had, built locally; anything else is an OCI
// reference. An image that is already there is returned at once (for OCI,
// when the registry still serves the same digest). The image's kernel is
// pulled too when it is a catalog kernel that is missing. An OCI image boots
// o.Kernel, else o.DefaultKernel; CheckPull's refusals come first.
func (m *Manager) PullImage(ctx context.Context, ref string, o PullOptions, p Progress) (store.Image, error) {
	p = progress.OrNop(p)
	kernel, err := m.CheckPull(ctx, ref, o)
	if err != nil {
		return store.Image{}, err
	}
	var im store.Image
	if m.IsCatalogImage(ref) {
		im, err = m.pullCatalogImage(ctx, ref, p)
	} else {
		im, err = m.pullOCI(ctx, ref, kernel, o, p)
	}
	if err != nil {
		return store.Image{}, err
	}
	if im.KernelRef != "" {
		if _, err := m.PullKernel(ctx, im.KernelRef, p); err != nil {
			return im, fmt.Errorf("image %q is ready but its kernel %q is not: %w (banger kernel pull %s tries again)", im.Name, im.KernelRef, err, im.KernelRef)
		}
	}
	return im, nil
}

func (m *Manager) pullCatalogImage(ctx context.Context, name string, p Progress) (store.Image, error) {
	unlock := m.pulls.MustLock("image/" + name)
	defer unlock()
	if im, err := m.st.GetImage(ctx, name); err == nil {
		return im, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Image{}, err
	}
	e, _ := m.cat.Images.Lookup(name)
	id := newID()
	dir := m.ImageDir(id)
	origin, digest := "", ""
	if e.Bundle != nil {
		url, err := catalog.ResolveURL(m.cat.BaseURL, *e.Bundle)
		if err == nil {
			p.Phase("downloading " + url)
			err = m.fetchBundle(ctx, bundle.Source{URL: url, SHA256: e.Bundle.SHA256, Size: e.Bundle.Size}, dir, p)
		}
		if err == nil {
			origin, digest = url, "sha256:"+e.Bundle.SHA256
		} else if e.Build == nil || ctx.Err() != nil {
			return store.Image{}, fmt.Errorf("pull image %q: %w", name, err)
		} else {
			p.Phase(fmt.Sprintf("bundle unavailable (%v); building locally", err))
		}
	} else if e.Build != nil {
		p.Phase("no published bundle; building locally")
	}
	if origin == "" {
		if err := m.buildCatalogImage(ctx, e, dir, p); err != nil {
			return store.Image{}, err
		}
		origin = "build:" + e.Build.Kind
	}
	return m.registerManaged(ctx, id, name, dir, e.Kernel, store.OriginCatalog, origin, digest)
}

// BuildImage builds a catalog image locally from its recipe, even when a
// bundle is published. It replaces nothing: an existing image of that name
// must be removed first.
func (m *Manager) BuildImage(ctx context.Context, name string, p Progress) (store.Image, error) {
	p = progress.OrNop(p)
	if m.cat.Images == nil || !m.IsCatalogImage(name) {
		return store.Image{}, badInput(fmt.Errorf("image %q is not in the catalog; catalog images: %s", name, m.catalogNames()))
	}
	unlock := m.pulls.MustLock("image/" + name)
	defer unlock()
	if err := m.checkFree(ctx, "image", name); err != nil {
		return store.Image{}, err
	}
	e, _ := m.cat.Images.Lookup(name)
	if e.Build == nil {
		return store.Image{}, badInput(fmt.Errorf("image %q has no local build recipe; pull it instead", name))
	}
	id := newID()
	dir := m.ImageDir(id)
	if err := m.buildCatalogImage(ctx, e, dir, p); err != nil {
		return store.Image{}, err
	}
	im, err := m.registerManaged(ctx, id, name, dir, e.Kernel, store.OriginCatalog, "build:"+e.Build.Kind, "")
	if err != nil {
		return im, err
	}
	if im.KernelRef != "" {
		if _, err := m.PullKernel(ctx, im.KernelRef, p); err != nil {
			return im, fmt.Errorf("image %q is built but its kernel %q is not: %w", im.Name, im.KernelRef, err)
		}
	}
	return im, nil
}

func (m *Manager) catalogNames() string {
	if m.cat.Images == nil {
		return "none"
	}
	return strings.Join(m.cat.Images.Names(), ", ")
}

// buildCatalogImage runs the recipe's builder into a temporary directory
// beside dir and renames it into place only when it succeeded.
func (m *Manager) buildCatalogImage(ctx context.Context, e catalog.Entry, dir string, p Progress) error {
	if e.Build == nil {
		return fmt.Errorf("image %q has neither a reachable bundle nor a build recipe", e.Name)
	}
	b := m.builders[e.Build.Kind]
	if b == nil {
		return fmt.Errorf("image %q: this banger cannot run build recipes of kind %q", e.Name, e.Build.Kind)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	work, done, err := m.workDir("build")
	if err != nil {
		return err
	}
	defer done()
	tmp := filepath.Join(work, "image")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := b(ctx, e, tmp, p); err != nil {
		return fmt.Errorf("build image %q: %w", e.Name, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "rootfs.ext4")); err != nil {
		return fmt.Errorf("build image %q: the builder made no rootfs.ext4", e.Name)
	}
	return place(tmp, dir)
}

// manifest is the optional manifest.json of an image directory.
type manifest struct {
	Kernel string `json:"kernel,omitempty"`
}

// registerManaged records the managed image whose files are in dir; on
// failure dir is removed.
func (m *Manager) registerManaged(ctx context.Context, id, name, dir, kernel, originKind, originRef, digest string) (store.Image, error) {
	fail := func(err error) (store.Image, error) {
		_ = m.removeManagedDir(dir)
		return store.Image{}, err
	}
	rootfs := filepath.Join(dir, "rootfs.ext4")
	fi, err := os.Stat(rootfs)
	if err != nil {
		return fail(fmt.Errorf("image %q: %w", name, err))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err == nil {
		var mf manifest
		if json.Unmarshal(b, &mf) == nil && mf.Kernel != "" && kernel == "" {
			kernel = mf.Kernel
		}
	}
	if digest == "" {
		if digest, err = fileDigest(rootfs); err != nil {
			return fail(err)
		}
	}
	im := store.Image{ID: id, Name: name, Managed: true, RootfsPath: rootfs, KernelRef: kernel, Digest: digest,
		SizeBytes: fi.Size(), OriginKind: originKind, OriginRef: originRef, CreatedAt: m.now().UTC()}
	if _, err := os.Stat(filepath.Join(dir, "work-seed.ext4")); err == nil {
		im.WorkSeedPath = filepath.Join(dir, "work-seed.ext4")
	}
	if err := m.st.PutImage(ctx, im); err != nil {
		return fail(err)
	}
	commit(dir)
	return im, nil
}

// OCIName derives a local image name from an OCI reference:
// "registry.example/team/app:1.2" becomes "app-1.2".
func OCIName(ref string) string {
	s := ref
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	s = strings.ToLower(strings.ReplaceAll(s, ":", "-"))
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	out := strings.Trim(b.String(), "-.")
	for strings.Contains(out, "..") {
		out = strings.ReplaceAll(out, "..", ".")
	}
	if len(out) > 63 {
		out = strings.Trim(out[:63], "-.")
	}
	return out
}

// pullOCI pulls ref as the image that boots kernel, which CheckPull chose.
func (m *Manager) pullOCI(ctx context.Context, ref, kernel string, o PullOptions, p Progress) (store.Image, error) {
	if m.oci == nil {
		return store.Image{}, fmt.Errorf("%q is not a catalog image and this banger has no OCI support", ref)
	}
	name := o.Name
	if name == "" {
		name = OCIName(ref)
	}
	if err := ValidName("image", name); err != nil {
		return store.Image{}, fmt.Errorf("%w (give one with --name)", err)
	}
	unlock := m.pulls.MustLock("image/" + name)
	defer unlock()
	existing, err := m.st.GetImage(ctx, name)
	switch {
	case err == nil:
		if existing.OriginKind != store.OriginOCI || existing.OriginRef != ref {
			return store.Image{}, badInput(fmt.Errorf("image %q already exists and is not %s: remove it or pull with --name", name, ref))
		}
		switch {
		case existing.KernelRef == "":
			return store.Image{}, badInput(fmt.Errorf("image %q (%s) names no kernel: it was pulled by an older banger; remove it (banger image rm %s) and pull it again", name, ref, name))
		case o.Kernel != "" && o.Kernel != existing.KernelRef:
			return store.Image{}, badInput(fmt.Errorf("image %q (%s) already exists and boots kernel %q, not %q: remove it (banger image rm %s) and pull it again with --kernel %s", name, ref, existing.KernelRef, o.Kernel, name, o.Kernel))
		}
		p.Phase("resolving " + ref)
		d, err := m.oci.Digest(ctx, ref, o.Insecure)
		if err != nil {
			return store.Image{}, err
		}
		if d == existing.Digest {
			return existing, nil // same digest: nothing to do
		}
		return store.Image{}, badInput(fmt.Errorf("image %q holds %s but %s is now %s: remove it first (banger image rm %s) to pull the new one", name, existing.Digest, ref, d, name))
	case !errors.Is(err, store.ErrNotFound):
		return store.Image{}, err
	}
	id := newID()
	dir := m.ImageDir(id)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return store.Image{}, err
	}
	work, done, err := m.workDir("oci-pull")
	if err != nil {
		return store.Image{}, err
	}
	defer done()
	tmp := filepath.Join(work, "image")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return store.Image{}, err
	}
	digest, _, err := m.oci.Import(ctx, ref, filepath.Join(tmp, "rootfs.ext4"), o.Insecure, p)
	if err != nil {
		return store.Image{}, err
	}
	if err := place(tmp, dir); err != nil {
		return store.Image{}, err
	}
	return m.registerManaged(ctx, id, name, dir, kernel, store.OriginOCI, ref, digest)
}
