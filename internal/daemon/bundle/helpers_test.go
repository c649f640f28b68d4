package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/store"

	"github.com/klauspost/compress/zstd"
)

// tarEntry is one entry of a hand-made archive; hand-made so tests can build
// archives Pack would never write.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       []byte
}

func file(name string, mode int64, body string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, mode: mode, body: []byte(body)}
}
func dir(name string, mode int64) tarEntry {
	return tarEntry{name: name, typ: tar.TypeDir, mode: mode}
}
func symlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, mode: 0o644, link: target}
}

func rawTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func makeBundle(t testing.TB, entries ...tarEntry) []byte {
	return compress(t, rawTar(t, entries))
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// server serves one bundle at /b.tar.zst and counts requests.
type server struct {
	*httptest.Server
	requests atomic.Int64
}

func serve(t testing.TB, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func serveBytes(t testing.TB, data []byte) *server {
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/b.tar.zst" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
}

func (s *server) source(data []byte) Source {
	return Source{URL: s.URL + "/b.tar.zst", SHA256: sum(data), Size: int64(len(data))}
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// recorder is a Progress that remembers what it was told.
type recorder struct {
	mu     sync.Mutex
	phases []string
	total  int64
	unit   store.Unit
	added  int64
	onAdd  func(total int64)
}

func (r *recorder) Phase(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, s)
}

func (r *recorder) SetTotal(n int64, unit store.Unit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total, r.unit = n, unit
}

func (r *recorder) Add(n int64) {
	r.mu.Lock()
	r.added += n
	added, f := r.added, r.onAdd
	r.mu.Unlock()
	if f != nil {
		f(added)
	}
}
