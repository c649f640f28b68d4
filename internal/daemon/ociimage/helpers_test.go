package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"banger/internal/progress"
)

var testTime = time.Unix(1700000000, 0)

// ent is one crafted tar entry.
type ent struct {
	h    tar.Header
	body string
}

func dir(name string, mode int64, uid, gid int) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid, ModTime: testTime}}
}

func file(name, body string, mode int64, uid, gid int) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, ModTime: testTime}, body: body}
}

func symlink(name, target string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlink(name, target string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: testTime}}
}

func chardev(name string, major, minor int64) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: testTime}}
}

func fifo(name string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o620, ModTime: testTime}}
}

func withXattr(e ent, key, val string) ent {
	if e.h.PAXRecords == nil {
		e.h.PAXRecords = map[string]string{}
	}
	e.h.PAXRecords["SCHILY.xattr."+key] = val
	e.h.Format = tar.FormatPAX
	return e
}

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.h
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if e.body != "" {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t testing.TB, tarBytes []byte, comp compression.Compression) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithCompression(comp))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func buildImage(t testing.TB, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: arch, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is an in-process registry that counts blob downloads and can
// run a hook on each.
type testRegistry struct {
	host      string
	blobGets  atomic.Int64
	mu        sync.Mutex
	onBlobGet func(w http.ResponseWriter, r *http.Request) bool // true: handled
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)

func startRegistry(t testing.TB) *testRegistry {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr := &testRegistry{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && blobPath.MatchString(r.URL.Path) {
			tr.blobGets.Add(1)
			tr.mu.Lock()
			hook := tr.onBlobGet
			tr.mu.Unlock()
			if hook != nil && hook(w, r) {
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func (tr *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	tr.mu.Lock()
	tr.onBlobGet = h
	tr.mu.Unlock()
}

func (tr *testRegistry) push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref := tr.host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func (tr *testRegistry) pushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref := tr.host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return ref
}

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs): %v", tool, err)
		}
	}
}

func fsck(t testing.TB, img string) {
	t.Helper()
	if _, err := exec.LookPath("e2fsck"); err != nil {
		t.Logf("e2fsck missing, image not checked: %v", err)
		return
	}
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("debugfs", "-R", req, img)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s", req, img, err, stderr.String())
	}
	return stdout.String() + stderr.String()
}

func catFile(t testing.TB, img, p string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+p, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", p, err)
	}
	return string(out)
}

// inodeInfo is what debugfs stat says about a path.
type inodeInfo struct {
	exists   bool
	inode    string
	typ      string
	mode     string
	uid, gid string
	links    string
	mtime    string
	raw      string
}

var (
	reInode = regexp.MustCompile(`Inode: (\d+)\s+Type: ([A-Za-z ]+?)\s+Mode:\s+(\d+)`)
	reOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reLinks = regexp.MustCompile(`Links: (\d+)`)
	reMtime = regexp.MustCompile(`mtime: 0x([0-9a-f]+)`)
)

func stat(t testing.TB, img, p string) inodeInfo {
	t.Helper()
	out := debugfs(t, img, "stat "+p)
	if strings.Contains(out, "File not found") {
		return inodeInfo{raw: out}
	}
	info := inodeInfo{exists: true, raw: out}
	if m := reInode.FindStringSubmatch(out); m != nil {
		info.inode, info.typ, info.mode = m[1], m[2], m[3]
	}
	if m := reOwner.FindStringSubmatch(out); m != nil {
		info.uid, info.gid = m[1], m[2]
	}
	if m := reLinks.FindStringSubmatch(out); m != nil {
		info.links = m[1]
	}
	if m := reMtime.FindStringSubmatch(out); m != nil {
		info.mtime = m[1]
	}
	return info
}

func listDir(t testing.TB, d string) []string {
	t.Helper()
	ents, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func userXattrsSupported(t testing.TB, d string) bool {
	t.Helper()
	p := filepath.Join(d, "xattr-probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	return unix.Lsetxattr(p, "user.probe", []byte("1"), 0) == nil
}

// recorder is a Progress that remembers what it was told.
type recorder struct {
	phases []string
	total  int64
	done   int64
}

func (r *recorder) Phase(s string)                    { r.phases = append(r.phases, s) }
func (r *recorder) SetTotal(n int64, _ progress.Unit) { r.total = n }
func (r *recorder) Add(n int64)                       { r.done += n }

func hexTime(tm time.Time) string { return fmt.Sprintf("%x", tm.Unix()) }
