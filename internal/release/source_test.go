package release

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/progress"
)

// tree is a release tree on disk, as the publish script lays it out.
type tree struct {
	dir     string
	v       Version
	archive string // its archive's name (amd64)
	files   map[string][]byte
}

// makeTree writes a release of version vs under a new directory, signed
// by k, with latest naming it.
func makeTree(t *testing.T, k testKey, vs string) *tree {
	t.Helper()
	v, err := ParseVersion(vs)
	if err != nil {
		t.Fatal(err)
	}
	tr := &tree{dir: t.TempDir(), v: v, archive: ArchiveName(v, "amd64"), files: map[string][]byte{}}
	tr.files[tr.archive] = makeArchive(t, releaseEntries())
	for _, u := range Units {
		tr.files[u] = []byte("[Unit]\nDescription=" + u + "\n")
	}
	tr.write(t, k)
	return tr
}

// write (re)writes the tree's files, sums and signature.
func (tr *tree) write(t *testing.T, k testKey) {
	t.Helper()
	vdir := filepath.Join(tr.dir, tr.v.String())
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	sums := Sums{}
	for n, b := range tr.files {
		sums[n] = sha256.Sum256(b)
		tr.put(t, n, b)
	}
	tr.put(t, SumsFile, sums.Bytes())
	tr.put(t, SigFile, k.sign(t, sums.Bytes()))
	if err := os.WriteFile(filepath.Join(tr.dir, LatestFile), []byte(tr.v.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// put writes one file of the version's directory.
func (tr *tree) put(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tr.dir, tr.v.String(), name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// recorder is a progress.Reporter that keeps what it is told.
type recorder struct {
	phases []string
	total  int64
	unit   progress.Unit
	added  int64
}

func (r *recorder) Phase(s string)                    { r.phases = append(r.phases, s) }
func (r *recorder) SetTotal(n int64, u progress.Unit) { r.total, r.unit = n, u }
func (r *recorder) Add(n int64)                       { r.added += n }

// bases serves tr over HTTP and as a file:// URL.
func bases(t *testing.T, tr *tree) map[string]string {
	srv := httptest.NewServer(http.FileServer(http.Dir(tr.dir)))
	t.Cleanup(srv.Close)
	return map[string]string{"http": srv.URL, "file": "file://" + tr.dir}
}

func TestSourceGoodRelease(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	for scheme, base := range bases(t, tr) {
		t.Run(scheme, func(t *testing.T) {
			s := &Source{Base: base, Key: k.pubPEM}
			ctx := context.Background()
			v, err := s.Latest(ctx)
			if err != nil || v != tr.v {
				t.Fatalf("Latest = %v, %v", v, err)
			}
			rel, err := s.Release(ctx, v)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			rec := &recorder{}
			if err := s.Download(ctx, rel, tr.archive, MaxArchiveSize, &got, rec); err != nil {
				t.Fatal(err)
			}
			want := tr.files[tr.archive]
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatal("downloaded bytes differ")
			}
			if len(rec.phases) != 1 || rec.phases[0] != "download "+tr.archive || rec.unit != progress.Bytes ||
				rec.total != int64(len(want)) || rec.added != int64(len(want)) {
				t.Fatalf("progress: %+v", rec)
			}
			unit, err := s.Fetch(ctx, rel, Units[0])
			if err != nil || !bytes.Equal(unit, tr.files[Units[0]]) {
				t.Fatalf("Fetch = %q, %v", unit, err)
			}
			files, err := Extract(bytes.NewReader(got.Bytes()), t.TempDir())
			if err != nil || len(files) != len(ArchiveFiles) {
				t.Fatalf("Extract: %v", err)
			}
		})
	}
}

func TestSourceRefusesBadSignature(t *testing.T) {
	signer, trusted := newTestKey(t, elliptic.P256()), newTestKey(t, elliptic.P256())
	tr := makeTree(t, signer, "v0.3.1")
	for scheme, base := range bases(t, tr) {
		s := &Source{Base: base, Key: trusted.pubPEM}
		rel, err := s.Release(context.Background(), tr.v)
		if !errors.Is(err, ErrSignature) || rel != nil {
			t.Fatalf("%s: %v, %v; want ErrSignature", scheme, rel, err)
		}
	}
	// The pinned key is used when Source has none: a test key's
	// signature is refused.
	s := &Source{Base: "file://" + tr.dir}
	if keyOverride == "" {
		if _, err := s.Release(context.Background(), tr.v); !errors.Is(err, ErrSignature) {
			t.Fatalf("pinned key: %v", err)
		}
	}
	// Sums that change after signing are refused too.
	tr.put(t, SumsFile, append(Sums{tr.archive: [32]byte{}, Units[0]: {}, Units[1]: {}}.Bytes(), '\n'))
	if _, err := (&Source{Base: s.Base, Key: signer.pubPEM}).Release(context.Background(), tr.v); !errors.Is(err, ErrSignature) {
		t.Fatalf("changed sums: %v", err)
	}
	os.Remove(filepath.Join(tr.dir, tr.v.String(), SigFile))
	if _, err := (&Source{Base: s.Base, Key: signer.pubPEM}).Release(context.Background(), tr.v); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("no signature: %v", err)
	}
}

func TestSourceRefusesWrongChecksum(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	damaged := bytes.Clone(tr.files[tr.archive])
	damaged[len(damaged)/2] ^= 1
	tr.put(t, tr.archive, damaged)
	tr.put(t, Units[1], []byte("[Unit]\nExecStart=/bin/evil\n"))
	for scheme, base := range bases(t, tr) {
		s := &Source{Base: base, Key: k.pubPEM}
		rel, err := s.Release(context.Background(), tr.v)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Download(context.Background(), rel, tr.archive, MaxArchiveSize, &bytes.Buffer{}, nil)
		if err == nil || !strings.Contains(err.Error(), "checksum of "+tr.archive+" does not match SHA256SUMS") {
			t.Fatalf("%s: %v", scheme, err)
		}
		if _, err := s.Fetch(context.Background(), rel, Units[1]); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("%s unit: %v", scheme, err)
		}
	}
}

// Signed sums of one version served under another are refused: their
// archive names say which release they are.
func TestSourceRefusesReplayedSums(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	old := makeTree(t, k, "v0.0.1")
	dst := filepath.Join(old.dir, "v0.0.2")
	if err := os.Rename(filepath.Join(old.dir, "v0.0.1"), dst); err != nil {
		t.Fatal(err)
	}
	v2, _ := ParseVersion("v0.0.2")
	_, err := (&Source{Base: "file://" + old.dir, Key: k.pubPEM}).Release(context.Background(), v2)
	if err == nil || !strings.Contains(err.Error(), "not an archive of v0.0.2") {
		t.Fatalf("replayed sums: %v", err)
	}
}

func TestSourceNotPublished(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	v, _ := ParseVersion("v9.9.9")
	for scheme, base := range bases(t, tr) {
		s := &Source{Base: base, Key: k.pubPEM}
		_, err := s.Release(context.Background(), v)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "version v9.9.9 is not published at "+base) {
			t.Fatalf("%s: %v", scheme, err)
		}
	}
	os.Remove(filepath.Join(tr.dir, LatestFile))
	if _, err := (&Source{Base: "file://" + tr.dir}).Latest(context.Background()); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "release_url") {
		t.Fatalf("no latest: %v", err)
	}
	for _, bad := range []string{"dev\n", "v1.2\n", "", strings.Repeat("v", MaxSumsSize+1)} {
		if err := os.WriteFile(filepath.Join(tr.dir, LatestFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if v, err := (&Source{Base: "file://" + tr.dir}).Latest(context.Background()); err == nil {
			t.Fatalf("latest %q: %v", clip(bad, 20), v)
		}
	}
}

// Servers that misbehave: short bodies, long bodies, errors, stalls.
func TestSourceHostileServers(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	archive := tr.files[tr.archive]
	var requests atomic.Int64
	var mode atomic.Value
	mode.Store("")
	files := http.FileServer(http.Dir(tr.dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".tar.gz") {
			files.ServeHTTP(w, r)
			return
		}
		requests.Add(1)
		switch mode.Load() {
		case "truncated":
			w.Header().Set("Content-Length", fmt.Sprint(len(archive)))
			w.Write(archive[:len(archive)/2])
		case "oversized-chunked":
			for range 64 {
				w.Write(archive)
				w.(http.Flusher).Flush()
			}
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "stall":
			w.Header().Set("Content-Length", fmt.Sprint(len(archive)))
			w.Write(archive[:100])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			files.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	s := &Source{Base: srv.URL, Key: k.pubPEM}
	ctx := context.Background()
	rel, err := s.Release(ctx, tr.v)
	if err != nil {
		t.Fatal(err)
	}
	saved := stallTimeout
	stallTimeout = 300 * time.Millisecond
	defer func() { stallTimeout = saved }()
	cases := []struct {
		mode string
		max  int64
		want string
	}{
		{"truncated", MaxArchiveSize, "unexpected EOF"},
		{"", int64(len(archive)) - 1, fmt.Sprintf("larger than %d; refusing", len(archive)-1)},
		{"oversized-chunked", int64(len(archive)) * 3, "larger than"},
		{"500", MaxArchiveSize, "HTTP 500"},
		{"stall", MaxArchiveSize, "stalled"},
	}
	for _, c := range cases {
		mode.Store(c.mode)
		var dst bytes.Buffer
		err := s.Download(ctx, rel, tr.archive, c.max, &dst, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), srv.URL) {
			t.Errorf("%q: %v; want an error naming the URL and saying %q", c.mode, err, c.want)
		}
		if testing.Verbose() {
			t.Logf("%q: %v", c.mode, err)
		}
	}
	// The caller's deadline holds too.
	mode.Store("stall")
	stallTimeout = time.Minute
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.Download(dctx, rel, tr.archive, MaxArchiveSize, &bytes.Buffer{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	// A name the sums do not list is refused without a request.
	before := requests.Load()
	other := ArchiveName(tr.v, "arm64")
	if err := s.Download(ctx, rel, other, MaxArchiveSize, &bytes.Buffer{}, nil); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("unlisted: %v", err)
	}
	if requests.Load() != before {
		t.Error("an unlisted file was requested")
	}
}

// A redirect from https to anything else is refused; one within https is
// followed.
func TestSourceRedirects(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	plain := httptest.NewServer(http.FileServer(http.Dir(tr.dir)))
	defer plain.Close()
	var target string
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/same/") {
			http.ServeFile(w, r, filepath.Join(tr.dir, strings.TrimPrefix(r.URL.Path, "/same/")))
			return
		}
		http.Redirect(w, r, target+r.URL.Path, http.StatusFound)
	}))
	defer tls.Close()
	client := tls.Client()
	client.CheckRedirect = defaultClient.CheckRedirect
	s := &Source{Base: tls.URL, Client: client, Key: k.pubPEM}
	target = plain.URL
	if _, err := s.Latest(context.Background()); err == nil || !strings.Contains(err.Error(), "leaves https") {
		t.Fatalf("https to http: %v", err)
	}
	target = tls.URL + "/same"
	if v, err := s.Latest(context.Background()); err != nil || v != tr.v {
		t.Fatalf("https to https: %v, %v", v, err)
	}
}

func TestSourceBaseURLs(t *testing.T) {
	v, _ := ParseVersion("v0.3.1")
	for base, want := range map[string]string{
		"ftp://example.invalid/r":  "not http, https or file",
		"releases":                 "not http, https or file",
		"file://otherhost/srv/rel": "local path",
		"file:rel":                 "absolute",
		"http:///x":                "no host",
		"https://h.invalid/?x=1":   "query",
	} {
		s := &Source{Base: base}
		if _, err := s.Latest(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", base, err, want)
		}
		if _, err := s.Release(context.Background(), v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", base, err, want)
		}
	}
}

// A tree signed as the publish script signs it without cosign (openssl
// dgst -sha256 -sign | base64 -w0) passes Release, and a download of
// exactly max bytes is within its bound.
func TestSourceOpenSSLSignedTree(t *testing.T) {
	key, pub := opensslKey(t, "P-256")
	tr := makeTree(t, newTestKey(t, elliptic.P256()), "v0.0.2")
	sums, err := os.ReadFile(filepath.Join(tr.dir, tr.v.String(), SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	tr.put(t, SigFile, opensslSign(t, key, sums))
	s := &Source{Base: "file://" + tr.dir, Key: pub}
	rel, err := s.Release(context.Background(), tr.v)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(tr.files[tr.archive]))
	if err := s.Download(context.Background(), rel, tr.archive, n, &bytes.Buffer{}, nil); err != nil {
		t.Fatalf("download of exactly max bytes: %v", err)
	}
}
