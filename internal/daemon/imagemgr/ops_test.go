package imagemgr_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/catalog"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/ociimage"
	"banger/internal/daemon/opstate"
	"banger/internal/store"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// A fault is what a test server does with one request.
type fault string

const (
	faultNone    fault = ""
	faultRefuse  fault = "refuse"  // 403 Forbidden
	faultDrop    fault = "drop"    // half the body, then the connection is cut
	faultStall   fault = "stall"   // half the body, then nothing until the client goes
	faultCorrupt fault = "corrupt" // the right length, the wrong bytes
)

// faulty serves data (or not) as f says, and closes stalled once a stalled
// response has sent its first half.
func faulty(w http.ResponseWriter, r *http.Request, data []byte, f fault, stalled chan struct{}, done <-chan struct{}) {
	switch f {
	case faultRefuse:
		http.Error(w, "denied by policy", http.StatusForbidden)
		return
	case faultCorrupt:
		data = bytes.Repeat([]byte{'x'}, len(data))
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	if f == faultNone || f == faultCorrupt {
		_, _ = w.Write(data)
		return
	}
	_, _ = w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	if f == faultDrop {
		panic(http.ErrAbortHandler) // cuts the connection
	}
	close(stalled)
	select {
	case <-r.Context().Done():
	case <-done:
	}
}

// faultServer serves named files, each with its fault.
type faultServer struct {
	url     string
	mu      sync.Mutex
	files   map[string][]byte
	faults  map[string]fault
	stalled chan struct{}
}

func newFaultServer(t *testing.T, files map[string][]byte) *faultServer {
	s := &faultServer{files: files, faults: map[string]fault{}, stalled: make(chan struct{})}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/")
		s.mu.Lock()
		data, ok := s.files[p]
		f := s.faults[p]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		faulty(w, r, data, f, s.stalled, done)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	s.url = srv.URL + "/"
	return s
}

func (s *faultServer) set(path string, f fault) {
	s.mu.Lock()
	s.faults[path] = f
	s.mu.Unlock()
}

// ociRegistry is an in-process registry whose manifest and layer requests
// can fail.
type ociRegistry struct {
	host           string
	mu             sync.Mutex
	manifestFault  fault
	layerFault     fault
	layerDigest    string
	stalled        chan struct{}
	layerBlobBytes []byte
}

var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/`)

func newOCIRegistry(t *testing.T) (*ociRegistry, string) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	o := &ociRegistry{stalled: make(chan struct{})}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		mf, lf, ld := o.manifestFault, o.layerFault, o.layerDigest
		o.mu.Unlock()
		switch {
		case r.Method == http.MethodGet && manifestPath.MatchString(r.URL.Path) && mf == faultRefuse:
			http.Error(w, `{"errors":[{"code":"DENIED","message":"denied by policy"}]}`, http.StatusForbidden)
			return
		case r.Method == http.MethodGet && ld != "" && strings.HasSuffix(r.URL.Path, "/blobs/"+ld) && lf != faultNone:
			faulty(w, r, o.layerBlobBytes, lf, o.stalled, done)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	o.host = strings.TrimPrefix(srv.URL, "http://")

	// One image of one layer big enough to be cut in the middle.
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	_ = tw.WriteHeader(&tar.Header{Name: "etc/", Mode: 0o755, Typeflag: tar.TypeDir})
	_ = tw.WriteHeader(&tar.Header{Name: "etc/data", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	_, _ = tw.Write(body)
	_ = tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb.Bytes())), nil
	}, tarball.WithCompression(compression.None))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	ref := o.host + "/team/app:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()
	o.layerDigest = d.String()
	rc, _ := layer.Compressed()
	o.layerBlobBytes, _ = io.ReadAll(rc)
	_ = rc.Close()
	return o, ref
}

// ociImport is the OCI importer of these tests: the real ociimage, with a
// mkfs of the test's choosing.
type ociImport struct{ mkfs string }

func (o ociImport) Digest(ctx context.Context, ref string, insecure bool) (string, error) {
	return ociimage.Digest(ctx, ref, ociimage.Options{Insecure: insecure})
}

func (o ociImport) Import(ctx context.Context, ref, dest string, insecure bool, p imagemgr.Progress) (string, int64, error) {
	res, err := ociimage.Import(ctx, ref, dest, ociimage.Options{Insecure: insecure, MkfsPath: o.mkfs}, p)
	return res.Digest, res.Size, err
}

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mkfs.ext4")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// opCase is one way for one operation kind to end.
type opCase struct {
	kind, name string
	// run sets the fixture up and returns the operation's work.
	run func(t *testing.T, f *fixture) opstate.Func
	// cancelWhen, when set, is closed (or returns) when the operation has
	// reached the phase to cancel in; the test then cancels it.
	cancelWhen func() <-chan struct{}
	want       string // final state
	wantErr    string // in the final error
	// leaves says the image or kernel that may remain (the kernel failed
	// after its image was made).
	leaves string
}

func TestEveryOperationKindEndsOnEveryPath(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: pulls, imports and builds for real")
	}
	var cases []opCase

	// image pull of a catalog image from its bundle, then its kernel.
	for _, c := range []struct {
		name, path string
		f          fault
		want       string
		wantErr    string
		leaves     string
	}{
		{"image bundle refused", "i.tar.zst", faultRefuse, opstate.Failed, "403", ""},
		{"image bundle connection dropped", "i.tar.zst", faultDrop, opstate.Failed, "i.tar.zst", ""},
		{"image bundle corrupt", "i.tar.zst", faultCorrupt, opstate.Failed, "i.tar.zst", ""},
		{"image bundle stalled and cancelled", "i.tar.zst", faultStall, opstate.Cancelled, "cancelled by request", ""},
		{"kernel bundle refused after the image", "k.tar.zst", faultRefuse, opstate.Failed, `kernel "kern" is not`, "image"},
		{"kernel bundle stalled and cancelled", "k.tar.zst", faultStall, opstate.Cancelled, "cancelled by request", "image"},
	} {
		var srv *faultServer
		oc := opCase{kind: "image pull (catalog)", name: c.name, want: c.want, wantErr: c.wantErr, leaves: c.leaves,
			run: func(t *testing.T, f *fixture) opstate.Func {
				srv = catalogServer(t, f, true)
				srv.set(c.path, c.f)
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.PullImage(ctx, "img", imagemgr.PullOptions{}, p)
					return err
				}
			}}
		if c.f == faultStall {
			oc.cancelWhen = func() <-chan struct{} { return srv.stalled }
		}
		cases = append(cases, oc)
	}

	// kernel pull from its bundle.
	for _, c := range []struct {
		name    string
		f       fault
		want    string
		wantErr string
	}{
		{"bundle refused", faultRefuse, opstate.Failed, "403"},
		{"connection dropped", faultDrop, opstate.Failed, "k.tar.zst"},
		{"stalled and cancelled", faultStall, opstate.Cancelled, "cancelled by request"},
	} {
		var srv *faultServer
		oc := opCase{kind: "kernel pull", name: c.name, want: c.want, wantErr: c.wantErr,
			run: func(t *testing.T, f *fixture) opstate.Func {
				srv = catalogServer(t, f, true)
				srv.set("k.tar.zst", c.f)
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.PullKernel(ctx, "kern", p)
					return err
				}
			}}
		if c.f == faultStall {
			oc.cancelWhen = func() <-chan struct{} { return srv.stalled }
		}
		cases = append(cases, oc)
	}

	// image pull of an OCI image: resolve, download, mkfs.
	for _, c := range []struct {
		name           string
		manifest, blob fault
		mkfs           string
		cancelAtMkfs   bool
		want, wantErr  string
	}{
		{name: "manifest refused", manifest: faultRefuse, want: opstate.Failed, wantErr: "DENIED"},
		{name: "layer refused", blob: faultRefuse, want: opstate.Failed, wantErr: "403"},
		{name: "layer connection dropped", blob: faultDrop, want: opstate.Failed, wantErr: "layer 1/1"},
		{name: "layer stalled and cancelled", blob: faultStall, want: opstate.Cancelled, wantErr: "cancelled by request"},
		{name: "mkfs fails", mkfs: `echo "mkfs.ext4: No space left on device" >&2; exit 1`, want: opstate.Failed, wantErr: "No space left on device"},
		{name: "mkfs cancelled", mkfs: `exec sleep 60`, cancelAtMkfs: true, want: opstate.Cancelled, wantErr: "cancelled by request"},
	} {
		var reg *ociRegistry
		var mkfsStarted chan struct{}
		oc := opCase{kind: "image pull (OCI)", name: c.name, want: c.want, wantErr: c.wantErr,
			run: func(t *testing.T, f *fixture) opstate.Func {
				var ref string
				reg, ref = newOCIRegistry(t)
				reg.manifestFault, reg.layerFault = c.manifest, c.blob
				mkfs := ""
				if c.mkfs != "" {
					mark := filepath.Join(t.TempDir(), "started")
					mkfs = script(t, fmt.Sprintf("touch %q\n%s", mark, c.mkfs))
					mkfsStarted = make(chan struct{})
					go func() { // ends with the test: the mark appears or the test fails first
						for i := 0; i < 1000; i++ {
							if _, err := os.Stat(mark); err == nil {
								close(mkfsStarted)
								return
							}
							time.Sleep(20 * time.Millisecond)
						}
					}()
				} else if c.manifest == faultNone && c.blob == faultNone {
					t.Fatal("a case must fail somewhere")
				}
				f.m.SetBuilders(nil, ociImport{mkfs: orTrue(mkfs)})
				installKernel(t, f, "kern")
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.PullImage(ctx, ref, imagemgr.PullOptions{Insecure: true, Kernel: "kern"}, p)
					return err
				}
			}}
		if c.blob == faultStall {
			oc.cancelWhen = func() <-chan struct{} { return reg.stalled }
		}
		if c.cancelAtMkfs {
			oc.cancelWhen = func() <-chan struct{} { return mkfsStarted }
		}
		cases = append(cases, oc)
	}

	// image build from a recipe.
	for _, c := range []struct {
		name, want, wantErr string
		block               bool
	}{
		{name: "builder fails", want: opstate.Failed, wantErr: "debootstrap: E: Couldn't download packages"},
		{name: "builder cancelled", block: true, want: opstate.Cancelled, wantErr: "cancelled by request"},
	} {
		started := make(chan struct{})
		oc := opCase{kind: "image build", name: c.name, want: c.want, wantErr: c.wantErr,
			run: func(t *testing.T, f *fixture) opstate.Func {
				catalogServer(t, f, false)
				f.m.SetBuilders(map[string]imagemgr.Builder{"fake": func(ctx context.Context, e catalog.Entry, dir string, p imagemgr.Progress) error {
					p.Phase("debootstrap")
					if err := os.WriteFile(filepath.Join(dir, "partial"), []byte("half a tree"), 0o644); err != nil {
						return err
					}
					if !c.block {
						return fmt.Errorf("debootstrap: E: Couldn't download packages")
					}
					close(started)
					<-ctx.Done()
					return ctx.Err()
				}}, nil)
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.BuildImage(ctx, "img", p)
					return err
				}
			}}
		if c.block {
			oc.cancelWhen = func() <-chan struct{} { return started }
		}
		cases = append(cases, oc)
	}

	// kernel import from a package.
	for _, c := range []struct {
		name, want, wantErr string
		stall               bool
	}{
		{name: "not a package", want: opstate.Failed, wantErr: "not an ar archive"},
		{name: "stalled mid-package and cancelled", stall: true, want: opstate.Cancelled, wantErr: "cancelled by request"},
	} {
		fed := make(chan struct{})
		oc := opCase{kind: "kernel import", name: c.name, want: c.want, wantErr: c.wantErr,
			run: func(t *testing.T, f *fixture) opstate.Func {
				src := filepath.Join(t.TempDir(), "linux.deb")
				if !c.stall {
					if err := os.WriteFile(src, []byte("not a package at all"), 0o644); err != nil {
						t.Fatal(err)
					}
				} else {
					if err := unix.Mkfifo(src, 0o600); err != nil {
						t.Skipf("no fifo: %v", err)
					}
					testDone := make(chan struct{})
					t.Cleanup(func() { close(testDone) })
					go func() { // ends with the test
						w, err := os.OpenFile(src, os.O_WRONLY, 0)
						if err != nil {
							return
						}
						defer w.Close()
						var deb bytes.Buffer
						deb.WriteString("!<arch>\n")
						deb.Write(arMember("debian-binary", 4))
						deb.WriteString("2.0\n")
						deb.Write(arMember("data.tar", 1<<30))
						_, _ = w.Write(deb.Bytes())
						// Wait for the import to read it all and block
						// waiting for more.
						for i := 0; i < 500; i++ {
							if n, err := unix.IoctlGetInt(int(w.Fd()), unix.TIOCINQ); err != nil || n == 0 {
								break
							}
							time.Sleep(10 * time.Millisecond)
						}
						time.Sleep(100 * time.Millisecond)
						close(fed)
						<-testDone // and then nothing more: the import waits for data
					}()
				}
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.ImportKernel(ctx, "k", src, p)
					return err
				}
			}}
		if c.stall {
			oc.cancelWhen = func() <-chan struct{} { return fed }
		}
		cases = append(cases, oc)
	}

	// image promote of a registered image.
	for _, c := range []struct {
		name, want, wantErr string
		cancel              bool
	}{
		{name: "source gone", want: opstate.Failed, wantErr: "no such file"},
		{name: "cancelled while copying", cancel: true, want: opstate.Cancelled, wantErr: "cancelled by request"},
	} {
		var copying chan struct{}
		oc := opCase{kind: "image promote", name: c.name, want: c.want, wantErr: c.wantErr, leaves: "image",
			run: func(t *testing.T, f *fixture) opstate.Func {
				rootfs := filepath.Join(f.user, "rootfs.ext4")
				mkfs, err := exec.LookPath("mkfs.ext4")
				if err != nil {
					t.Skip("needs mkfs.ext4 to make an image to promote")
				}
				// 2 GiB, sparse: copying takes long enough to be cancelled.
				if out, err := exec.Command(mkfs, "-q", "-F", rootfs, "2G").CombinedOutput(); err != nil {
					t.Fatalf("mkfs.ext4: %v: %s", err, out)
				}
				if _, err := f.m.RegisterImage(context.Background(), imagemgr.RegisterRequest{Name: "mine", Rootfs: rootfs}); err != nil {
					t.Skipf("cannot register a test image here: %v", err)
				}
				if !c.cancel {
					_ = os.Remove(rootfs)
				}
				copying = make(chan struct{})
				return func(ctx context.Context, p *opstate.Progress) error {
					_, err := f.m.PromoteImage(ctx, "mine", phaseSignal{Progress: p, phase: "copying", ch: copying})
					return err
				}
			}}
		if c.cancel {
			oc.cancelWhen = func() <-chan struct{} { return copying }
		}
		cases = append(cases, oc)
	}

	for _, c := range cases {
		t.Run(c.kind+"/"+c.name, func(t *testing.T) {
			f := newFixture(t)
			ops := opstate.New(f.st, nil)
			t.Cleanup(func() { _ = ops.Shutdown(context.Background()) })
			ctx := context.Background()
			op, err := ops.Start(ctx, c.kind, c.name, c.run(t, f))
			if err != nil {
				t.Fatal(err)
			}
			if c.cancelWhen != nil {
				select {
				case <-c.cancelWhen():
				case <-time.After(30 * time.Second):
					t.Fatal("the operation never reached the phase to cancel in")
				}
				if _, err := ops.Cancel(ctx, op.ID); err != nil {
					t.Fatal(err)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			live, err := ops.Wait(wctx, op.ID)
			if err != nil {
				t.Fatalf("operation still %s after 30 s: %+v", live.State, live)
			}
			stored, err := f.st.GetOperation(ctx, op.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range []store.Operation{live, stored} {
				if o.State != c.want || !strings.Contains(o.Error, c.wantErr) || o.FinishedAt.IsZero() {
					t.Fatalf("operation ended %s with %q (finished %v); want %s with %q", o.State, o.Error, o.FinishedAt, c.want, c.wantErr)
				}
			}
			assertNothingLeft(t, f, c.leaves)
		})
	}
}

func orTrue(s string) string {
	if s == "" {
		return "true"
	}
	return s
}

// phaseSignal closes ch when the work enters phase.
type phaseSignal struct {
	imagemgr.Progress
	phase string
	ch    chan struct{}
}

func (s phaseSignal) Phase(name string) {
	s.Progress.Phase(name)
	if name == s.phase {
		select {
		case <-s.ch:
		default:
			close(s.ch)
		}
	}
}

// catalogServer serves a catalog image "img" (bundle i.tar.zst, when
// withBundle) that boots the catalog kernel "kern" (bundle k.tar.zst), and
// points f's manager at it. The image's local recipe is of kind "fake",
// for which no builder is set unless the test sets one.
func catalogServer(t *testing.T, f *fixture, withBundle bool) *faultServer {
	t.Helper()
	kdir, idir := t.TempDir(), t.TempDir()
	writeFiles(t, kdir, map[string]string{"vmlinux": strings.Repeat("v", 1<<20), "modules/6.1.0-test/modules.order": "", "manifest.json": "{}"})
	writeFiles(t, idir, map[string]string{"rootfs.ext4": strings.Repeat("r", 1<<20), "manifest.json": `{"kernel":"kern"}`})
	kb, ksum := packDir(t, kdir)
	ib, isum := packDir(t, idir)
	srv := newFaultServer(t, map[string][]byte{"k.tar.zst": kb, "i.tar.zst": ib})
	imageEntry := `{"name":"img","version":"1","arch":"x86_64","kernel":"kern","build":{"kind":"fake"}}`
	if withBundle {
		imageEntry = fmt.Sprintf(`{"name":"img","version":"1","arch":"x86_64","kernel":"kern","bundle":{"url":"i.tar.zst","sha256":%q,"size":%d}}`, isum, len(ib))
	}
	ic, kc := catalogs(t, `{"entries":[`+imageEntry+`]}`,
		fmt.Sprintf(`{"entries":[{"name":"kern","version":"1","arch":"x86_64","bundle":{"url":"k.tar.zst","sha256":%q,"size":%d}}]}`, ksum, len(kb)))
	f.m.SetCatalogs(imagemgr.Catalogs{Images: ic, Kernels: kc, BaseURL: srv.url})
	return srv
}

// assertNothingLeft fails when a failed or cancelled operation left work
// behind: anything in tmp/, a temporary name beside images or kernels, or
// an image or kernel other than the one leaves names ("image": the image
// stays, as when its kernel failed after it was made).
func assertNothingLeft(t *testing.T, f *fixture, leaves string) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(f.state, imagemgr.WorkDirName)); len(ents) != 0 {
		t.Errorf("work dir holds %v", names(ents))
	}
	for _, d := range []string{"images", "kernels"} {
		ents, _ := os.ReadDir(filepath.Join(f.state, d))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), ".") {
				t.Errorf("%s holds the temporary %s", d, e.Name())
			}
		}
	}
	ks, _ := f.m.Kernels(context.Background())
	for _, k := range ks {
		if k.Managed {
			t.Errorf("kernel %q was recorded", k.Name)
		}
	}
	if leaves != "image" {
		if ims, _ := f.m.Images(context.Background()); len(ims) != 0 {
			t.Errorf("images recorded: %v", ims)
		}
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
