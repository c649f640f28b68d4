package imagemgr_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"banger/internal/catalog"
	"banger/internal/daemon/bundle"
	"banger/internal/daemon/imagemgr"
	"banger/internal/store"
)

// packDir bundles a directory and returns the bytes and their sha256.
func packDir(t *testing.T, dir string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	sum, _, err := bundle.Pack(context.Background(), dir, &buf)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(buf.Bytes())
	if hex.EncodeToString(h[:]) != sum {
		t.Fatalf("Pack reported %s, content hashes to %x", sum, h)
	}
	return buf.Bytes(), sum
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type served struct {
	srv      *httptest.Server
	requests atomic.Int32
}

func serve(t *testing.T, files map[string][]byte) *served {
	s := &served{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		data, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		_, _ = w.Write(data)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func catalogs(t *testing.T, images, kernels string) (*catalog.Catalog, *catalog.Catalog) {
	t.Helper()
	ic, err := catalog.Parse(catalog.Images, []byte(images))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := catalog.Parse(catalog.Kernels, []byte(kernels))
	if err != nil {
		t.Fatal(err)
	}
	return ic, kc
}

func TestPullCatalogImageAndKernelFromBundles(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	kdir, idir := t.TempDir(), t.TempDir()
	writeFiles(t, kdir, map[string]string{"vmlinux": "ELF?", "initrd.img": "initrd", "modules/6.1.0-test/modules.order": "", "manifest.json": "{}"})
	writeFiles(t, idir, map[string]string{"rootfs.ext4": strings.Repeat("r", 8192), "manifest.json": `{"kernel":"kern"}`})
	kb, ksum := packDir(t, kdir)
	ib, isum := packDir(t, idir)
	srv := serve(t, map[string][]byte{"k.tar.zst": kb, "i.tar.zst": ib})
	ic, kc := catalogs(t,
		fmt.Sprintf(`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","bundle":{"url":"i.tar.zst","sha256":%q,"size":%d}}]}`, isum, len(ib)),
		fmt.Sprintf(`{"entries":[{"name":"kern","version":"1","arch":"x86_64","bundle":{"url":"k.tar.zst","sha256":%q,"size":%d}}]}`, ksum, len(kb)))
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: srv.srv.URL + "/"})

	im, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !im.Managed || im.KernelRef != "kern" || im.OriginKind != store.OriginCatalog || im.Digest != "sha256:"+isum {
		t.Fatalf("image = %+v", im)
	}
	k, err := f.m.Kernel(ctx, "kern")
	if err != nil || k.Version != "6.1.0-test" || k.InitrdPath == "" {
		t.Fatalf("kernel pulled with the image = %+v, %v", k, err)
	}
	if got := srv.requests.Load(); got != 2 {
		t.Fatalf("%d requests, want 2", got)
	}
	// Pulling again is a no-op.
	if _, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if got := srv.requests.Load(); got != 2 {
		t.Fatalf("second pull made requests (%d total)", got)
	}
}

func TestPullFallsBackToLocalBuildAndSaysSo(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	srv := serve(t, nil) // every bundle 404s
	ic, kc := catalogs(t,
		`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","bundle":{"url":"gone.tar.zst","sha256":"`+strings.Repeat("a", 64)+`","size":10},"build":{"kind":"fake"}}]}`,
		`{"entries":[{"name":"kern","version":"1","arch":"x86_64","build":{"kind":"apt-kernel","params":{"package":"x"}}}]}`)
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: srv.srv.URL + "/"})
	var builds atomic.Int32
	f.m.SetBuilders(map[string]imagemgr.Builder{"fake": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
		builds.Add(1)
		return os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("built"), 0o644)
	}}, nil)
	// The kernel is already installed, so only the image is built.
	if err := f.st.PutKernel(ctx, store.Kernel{ID: "k", Name: "kern", VmlinuxPath: "/v", CreatedAt: testNow()}); err != nil {
		t.Fatal(err)
	}
	p := &phases{}
	im, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, p)
	if err != nil {
		t.Fatal(err)
	}
	if im.OriginRef != "build:fake" || builds.Load() != 1 {
		t.Fatalf("image = %+v after %d builds", im, builds.Load())
	}
	if !p.saw("bundle unavailable") || !p.saw("building locally") {
		t.Fatalf("progress did not say it built locally: %v", p.list())
	}
}

func TestConcurrentPullsBuildOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ic, kc := catalogs(t,
		`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","build":{"kind":"fake"}}]}`,
		`{"entries":[{"name":"kern","version":"1","arch":"x86_64","build":{"kind":"apt-kernel","params":{"package":"x"}}}]}`)
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc})
	if err := f.st.PutKernel(ctx, store.Kernel{ID: "k", Name: "kern", VmlinuxPath: "/v", CreatedAt: testNow()}); err != nil {
		t.Fatal(err)
	}
	var builds atomic.Int32
	f.m.SetBuilders(map[string]imagemgr.Builder{"fake": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
		builds.Add(1)
		return os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("built"), 0o644)
	}}, nil)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if builds.Load() != 1 {
		t.Fatalf("%d builds for 4 concurrent pulls, want 1", builds.Load())
	}
}

func TestFailedBuildLeavesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ic, kc := catalogs(t,
		`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","build":{"kind":"fake"}}]}`,
		`{"entries":[{"name":"kern","version":"1","arch":"x86_64","build":{"kind":"apt-kernel","params":{"package":"x"}}}]}`)
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc})
	f.m.SetBuilders(map[string]imagemgr.Builder{"fake": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
		_ = os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("half"), 0o644)
		return errors.New("mirror unreachable")
	}}, nil)
	if _, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, nil); err == nil || !strings.Contains(err.Error(), "mirror unreachable") {
		t.Fatalf("err = %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(f.state, "images"))
	if len(ents) != 0 {
		t.Fatalf("failed build left %v", ents)
	}
	if ims, _ := f.m.Images(ctx); len(ims) != 0 {
		t.Fatalf("failed build registered %v", ims)
	}
}

func TestUnknownNames(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ic, kc := catalogs(t,
		`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","build":{"kind":"fake"}}]}`,
		`{"entries":[{"name":"kern","version":"1","arch":"x86_64","build":{"kind":"apt-kernel","params":{"package":"x"}}}]}`)
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc})
	if _, err := f.m.PullKernel(ctx, "nope", nil); err == nil || !strings.Contains(err.Error(), "catalog kernels: kern") {
		t.Fatalf("PullKernel unknown = %v", err)
	}
	if _, err := f.m.BuildImage(ctx, "nope", nil); err == nil || !strings.Contains(err.Error(), "not in the catalog") {
		t.Fatalf("BuildImage unknown = %v", err)
	}
	// Not a catalog name and no OCI importer.
	if _, err := f.m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{}, nil); err == nil {
		t.Fatal("OCI pull without an importer succeeded")
	}
}

type fakeOCI struct {
	digest  string
	imports atomic.Int32
}

func (o *fakeOCI) Digest(ctx context.Context, ref string, insecure bool) (string, error) {
	return o.digest, nil
}

func (o *fakeOCI) Import(ctx context.Context, ref, dest string, insecure bool, p imagemgr.Progress) (string, int64, error) {
	o.imports.Add(1)
	return o.digest, 5, os.WriteFile(dest, []byte("ext4!"), 0o644)
}

func TestOCIPullReusesSameDigest(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	oci := &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)}
	f.m.SetBuilders(nil, oci)
	installKernel(t, f, "mine")
	o := imagemgr.PullOptions{DefaultKernel: fixedKernel("mine")}
	ref := "registry.example/team/app:1.2"
	im, err := f.m.PullImage(ctx, ref, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != "app-1.2" || im.OriginKind != store.OriginOCI || im.Digest != oci.digest {
		t.Fatalf("image = %+v", im)
	}
	if _, err := f.m.PullImage(ctx, ref, o, nil); err != nil {
		t.Fatal(err)
	}
	if oci.imports.Load() != 1 {
		t.Fatalf("%d imports, want 1 (same digest again is instant)", oci.imports.Load())
	}
	oci.digest = "sha256:" + strings.Repeat("c", 64)
	if _, err := f.m.PullImage(ctx, ref, o, nil); err == nil || !strings.Contains(err.Error(), "remove it first") {
		t.Fatalf("changed digest = %v", err)
	}
}

// installKernel records an installed (imported) kernel named name.
func installKernel(t *testing.T, f *fixture, name string) {
	t.Helper()
	if err := f.st.PutKernel(context.Background(), store.Kernel{ID: "id-" + name, Name: name, VmlinuxPath: "/v", CreatedAt: testNow()}); err != nil {
		t.Fatal(err)
	}
}

// kernelCatalog serves a catalog kernel "kern" from a bundle, and an image
// catalog entry "img" that boots it.
func kernelCatalog(t *testing.T, f *fixture) *served {
	t.Helper()
	kdir := t.TempDir()
	writeFiles(t, kdir, map[string]string{"vmlinux": "ELF?", "modules/6.1.0-test/modules.order": "", "manifest.json": "{}"})
	kb, ksum := packDir(t, kdir)
	srv := serve(t, map[string][]byte{"k.tar.zst": kb})
	ic, kc := catalogs(t,
		`{"entries":[{"name":"img","version":"1","arch":"x86_64","kernel":"kern","build":{"kind":"fake"}}]}`,
		fmt.Sprintf(`{"entries":[{"name":"kern","version":"1","arch":"x86_64","bundle":{"url":"k.tar.zst","sha256":%q,"size":%d}}]}`, ksum, len(kb)))
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: srv.srv.URL + "/"})
	return srv
}

// assertNoImages fails when anything of an image is left: a directory
// (finished or temporary) under images/, or a row.
func assertNoImages(t *testing.T, f *fixture) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(f.state, "images")); len(ents) != 0 {
		t.Fatalf("images dir holds %v", ents)
	}
	if ims, err := f.m.Images(context.Background()); err != nil || len(ims) != 0 {
		t.Fatalf("store holds images %v (%v)", ims, err)
	}
}

func TestOCIPullRecordsGivenKernel(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	srv := kernelCatalog(t, f)
	oci := &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)}
	f.m.SetBuilders(nil, oci)
	installKernel(t, f, "mine")
	ref := "registry.example/team/app:1.2"
	im, err := f.m.PullImage(ctx, ref, imagemgr.PullOptions{Kernel: "mine", DefaultKernel: fixedKernel("kern")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if im.KernelRef != "mine" {
		t.Fatalf("pulled with --kernel mine, image boots %q", im.KernelRef)
	}
	if got, err := f.m.Image(ctx, "app-1.2"); err != nil || got.KernelRef != "mine" {
		t.Fatalf("stored image = %+v, %v", got, err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Fatalf("the default kernel was fetched (%d requests) though --kernel was given", n)
	}
	// Again with the same kernel is instant; with another it is refused
	// and changes nothing.
	if _, err := f.m.PullImage(ctx, ref, imagemgr.PullOptions{Kernel: "mine"}, nil); err != nil {
		t.Fatal(err)
	}
	installKernel(t, f, "other")
	_, err = f.m.PullImage(ctx, ref, imagemgr.PullOptions{Kernel: "other"}, nil)
	if err == nil || !strings.Contains(err.Error(), `boots kernel "mine", not "other"`) || !strings.Contains(err.Error(), "banger image rm app-1.2") {
		t.Fatalf("re-pull with another kernel = %v", err)
	}
	if got, _ := f.m.Image(ctx, "app-1.2"); got.KernelRef != "mine" || oci.imports.Load() != 1 {
		t.Fatalf("refused re-pull changed the image: %+v, %d imports", got, oci.imports.Load())
	}
	// Without --kernel the image keeps its kernel, and the default rule is
	// not even asked (here it could not answer).
	noDefault := func(context.Context) (string, error) { return "", errors.New("no default here") }
	if got, err := f.m.PullImage(ctx, ref, imagemgr.PullOptions{DefaultKernel: noDefault}, nil); err != nil || got.KernelRef != "mine" {
		t.Fatalf("re-pull without --kernel = %+v, %v; want the image, still booting mine", got, err)
	}
}

func TestOCIPullUsesDefaultKernelAndPullsIt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	srv := kernelCatalog(t, f)
	f.m.SetBuilders(nil, &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)})
	im, err := f.m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{DefaultKernel: fixedKernel("kern")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if im.KernelRef != "kern" {
		t.Fatalf("pulled without --kernel, image boots %q, want the default kern", im.KernelRef)
	}
	k, err := f.m.Kernel(ctx, "kern")
	if err != nil || k.Version != "6.1.0-test" || srv.requests.Load() != 1 {
		t.Fatalf("default kernel pulled with the image = %+v, %v (%d requests)", k, err, srv.requests.Load())
	}
}

func TestOCIPullSaysImageReadyWhenItsKernelFails(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ic, kc := catalogs(t, `{"entries":[]}`,
		`{"entries":[{"name":"kern","version":"1","arch":"x86_64","bundle":{"url":"gone.tar.zst","sha256":"`+strings.Repeat("a", 64)+`","size":10}}]}`)
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: serve(t, nil).srv.URL + "/"})
	f.m.SetBuilders(nil, &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)})
	im, err := f.m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{Kernel: "kern"}, nil)
	if err == nil || !strings.Contains(err.Error(), `image "app-1" is ready but its kernel "kern" is not`) {
		t.Fatalf("err = %v", err)
	}
	if got, err := f.m.Image(ctx, "app-1"); err != nil || got.KernelRef != "kern" || im.KernelRef != "kern" {
		t.Fatalf("image = %+v, %v", got, err)
	}
}

func TestOCIPullRefusesUnknownKernelBeforeImport(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	kernelCatalog(t, f)
	installKernel(t, f, "mine")
	oci := &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)}
	f.m.SetBuilders(nil, oci)
	for _, o := range []imagemgr.PullOptions{
		{Kernel: "nope", DefaultKernel: fixedKernel("kern")},
		{DefaultKernel: fixedKernel("nope")},
	} {
		_, err := f.m.PullImage(ctx, "registry.example/app:1", o, nil)
		var in *imagemgr.InputError
		if !errors.As(err, &in) || !strings.Contains(err.Error(), `"nope" is neither an installed kernel (installed: mine) nor in the kernel catalog (catalog: kern)`) {
			t.Fatalf("PullImage(%+v) = %v, want an input error naming the kernels there are", o, err)
		}
		if _, err := f.m.CheckPull(ctx, "registry.example/app:1", o); err == nil {
			t.Fatalf("CheckPull(%+v) let it through", o)
		}
	}
	_, err := f.m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{Kernel: "Bad_Name"}, nil)
	if err == nil || !strings.Contains(err.Error(), `--kernel: kernel name "Bad_Name" is not valid`) {
		t.Fatalf("bad kernel name = %v", err)
	}
	_, err = f.m.PullImage(ctx, "registry.example/app:1", imagemgr.PullOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "needs a kernel and there is no default") {
		t.Fatalf("no kernel at all = %v", err)
	}
	if n := oci.imports.Load(); n != 0 {
		t.Fatalf("Import ran %d times for refused pulls", n)
	}
	assertNoImages(t, f)
	if ks, _ := f.m.Kernels(ctx); len(ks) != 1 {
		t.Fatalf("refused pulls changed the kernels: %v", ks)
	}
}

func TestCatalogPullRefusesKernel(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	srv := kernelCatalog(t, f)
	var builds atomic.Int32
	f.m.SetBuilders(map[string]imagemgr.Builder{"fake": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
		builds.Add(1)
		return os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("built"), 0o644)
	}}, &fakeOCI{})
	installKernel(t, f, "mine")
	_, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{Kernel: "mine"}, nil)
	var in *imagemgr.InputError
	if !errors.As(err, &in) || !strings.Contains(err.Error(), `"img" is a catalog image, which boots the kernel its catalog entry names (kern)`) {
		t.Fatalf("catalog pull with --kernel = %v", err)
	}
	if builds.Load() != 0 || srv.requests.Load() != 0 {
		t.Fatalf("refused pull built %d images and made %d requests", builds.Load(), srv.requests.Load())
	}
	assertNoImages(t, f)
	// A default kernel is not --kernel: a catalog image keeps its own.
	im, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{DefaultKernel: fixedKernel("mine")}, nil)
	if err != nil || im.KernelRef != "kern" {
		t.Fatalf("catalog pull = %+v, %v", im, err)
	}
}

func TestOCIImageWithoutKernelIsNotReused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	installKernel(t, f, "mine")
	oci := &fakeOCI{digest: "sha256:" + strings.Repeat("b", 64)}
	f.m.SetBuilders(nil, oci)
	ref := "registry.example/app:1"
	// As an older banger recorded it: no kernel.
	old := store.Image{ID: "old", Name: "app-1", Managed: true, RootfsPath: filepath.Join(f.state, "images", "old", "rootfs.ext4"),
		Digest: oci.digest, OriginKind: store.OriginOCI, OriginRef: ref, CreatedAt: testNow()}
	if err := f.st.PutImage(ctx, old); err != nil {
		t.Fatal(err)
	}
	_, err := f.m.PullImage(ctx, ref, imagemgr.PullOptions{DefaultKernel: fixedKernel("mine")}, nil)
	if err == nil || !strings.Contains(err.Error(), "names no kernel") || !strings.Contains(err.Error(), "banger image rm app-1") {
		t.Fatalf("re-pull of a kernel-less image = %v", err)
	}
	if oci.imports.Load() != 0 {
		t.Fatal("the refused pull imported")
	}
}

func TestImageKernel(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	kernelCatalog(t, f)
	if err := f.st.PutImage(ctx, store.Image{ID: "r", Name: "reg", RootfsPath: "/r", KernelRef: "mine", OriginKind: store.OriginRegister, CreatedAt: testNow()}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"img": "kern", "reg": "mine"} {
		if got, err := f.m.ImageKernel(ctx, name); err != nil || got != want {
			t.Errorf("ImageKernel(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := f.m.ImageKernel(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ImageKernel(nope) = %q, %v; want store.ErrNotFound", got, err)
	}
}

// fixedKernel is a default-kernel rule that always names k.
func fixedKernel(k string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return k, nil }
}

func TestOCIName(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.example/team/app:1.2":       "app-1.2",
		"localhost:5000/debian:bookworm":      "debian-bookworm",
		"alpine":                              "alpine",
		"registry.example/x/y@sha256:abcdef0": "y",
		"Registry.Example/UPPER_case:Tag":     "upper-case-tag",
	} {
		if got := imagemgr.OCIName(ref); got != want {
			t.Errorf("OCIName(%q) = %q, want %q", ref, got, want)
		}
	}
}

type phases struct {
	mu sync.Mutex
	ps []string
}

func (p *phases) Phase(s string)             { p.mu.Lock(); p.ps = append(p.ps, s); p.mu.Unlock() }
func (p *phases) SetTotal(int64, store.Unit) {}
func (p *phases) Add(int64)                  {}
func (p *phases) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ps...)
}
func (p *phases) saw(s string) bool {
	for _, x := range p.list() {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}
