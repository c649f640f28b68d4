package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/elliptic"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A store that labels the archive Content-Encoding: gzip (an object
// uploaded with that metadata, a server mapping .gz to it) still serves
// the signed bytes: Download takes them as stored, as curl does.
func TestSourceIgnoresContentEncoding(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	files := http.FileServer(http.Dir(tr.dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".tar.gz") {
			w.Header().Set("Content-Encoding", "gzip")
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	s := &Source{Base: srv.URL, Key: k.pubPEM}
	rel, err := s.Release(context.Background(), tr.v)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	rec := &recorder{}
	if err := s.Download(context.Background(), rel, tr.archive, MaxArchiveSize, &got, rec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), tr.files[tr.archive]) {
		t.Fatal("downloaded bytes differ from the archive")
	}
	if rec.total != int64(got.Len()) {
		t.Fatalf("progress total %d, want the declared %d", rec.total, got.Len())
	}
}

// rawServer answers every connection on 127.0.0.1 with reply, whatever
// the request, and is stopped with the test.
func rawServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The whole request first: closing on unread bytes resets the
			// connection, which may drop the reply before the client reads.
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = c.Write([]byte(reply))
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// A server's reason phrase never reaches the user's terminal: it may hold
// escape sequences.
func TestSourceStatusLineNotEchoed(t *testing.T) {
	base := rawServer(t, "HTTP/1.1 500 \x1b]0;owned\x07\x1b[2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	_, err := (&Source{Base: base}).Latest(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 500 Internal Server Error") || strings.ContainsAny(err.Error(), "\x1b\x07") {
		t.Fatalf("got %q; want HTTP 500 without the server's escapes", err)
	}
}

// A server that drips a byte at a time, each well within stallTimeout,
// is stalled all the same: it cannot hold a download for ever.
func TestSourceDripIsStall(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	files := http.FileServer(http.Dir(tr.dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".tar.gz") {
			files.ServeHTTP(w, r)
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				fmt.Fprint(w, "x")
				w.(http.Flusher).Flush()
			}
		}
	}))
	defer srv.Close()
	s := &Source{Base: srv.URL, Key: k.pubPEM}
	rel, err := s.Release(context.Background(), tr.v)
	if err != nil {
		t.Fatal(err)
	}
	saved := stallTimeout
	stallTimeout = 300 * time.Millisecond
	defer func() { stallTimeout = saved }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Download(ctx, rel, tr.archive, MaxArchiveSize, &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("got %v after %s; want a stall", err, time.Since(start))
	}
}

// A FIFO in a file:// tree is refused at once: opening it would block,
// beyond any context, until a writer came.
func TestSourceFileFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, LatestFile)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := (&Source{Base: "file://" + dir}).Latest(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("got %v; want a FIFO refused", err)
		}
	case <-time.After(5 * time.Second):
		// Let the blocked open go: a writer ends it.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("Latest blocked on a FIFO")
	}
}

// Download trusts only sums that Source.Release verified: a Release
// built by hand (say, from an unsigned SHA256SUMS) is refused before any
// request, as is none at all.
func TestSourceRefusesUnverifiedRelease(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	sums, err := ParseSums(mustRead(t, filepath.Join(tr.dir, tr.v.String(), SumsFile)))
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{Base: "file://" + tr.dir, Key: k.pubPEM}
	for _, rel := range []*Release{{Version: tr.v, Sums: sums}, nil} {
		var dst bytes.Buffer
		err := s.Download(context.Background(), rel, tr.archive, MaxArchiveSize, &dst, nil)
		if err == nil || !strings.Contains(err.Error(), "not verified") || dst.Len() != 0 {
			t.Fatalf("%v: got %v with %d bytes; want refused", rel, err, dst.Len())
		}
		if _, err := s.Fetch(context.Background(), rel, Units[0]); err == nil {
			t.Fatalf("Fetch of an unverified release: accepted")
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An empty latest (a publish cut short, a placeholder) says so, not that
// the release is "a development build".
func TestSourceEmptyLatest(t *testing.T) {
	dir := t.TempDir()
	for _, text := range []string{"", "\n", " \r\n"} {
		if err := os.WriteFile(filepath.Join(dir, LatestFile), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := (&Source{Base: "file://" + dir}).Latest(context.Background())
		if err == nil || !strings.Contains(err.Error(), "is empty") || strings.Contains(err.Error(), "development") {
			t.Fatalf("latest %q: %v; want one saying it is empty", text, err)
		}
	}
	// Surrounding blanks and a CRLF are tolerated; the version is not.
	for text, ok := range map[string]bool{"v0.3.1\r\n": true, " v0.3.1 \n": true, "v0.3.1\nv0.3.2\n": false, "v 0.3.1\n": false} {
		if err := os.WriteFile(filepath.Join(dir, LatestFile), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		v, err := (&Source{Base: "file://" + dir}).Latest(context.Background())
		if (err == nil) != ok || ok && v.String() != "v0.3.1" {
			t.Fatalf("latest %q: %v, %v", text, v, err)
		}
	}
}

// A declared length that lies is refused whichever way it lies: shorter
// than the body (the rest is never read, and the checksum fails),
// negative or not a number (the transport refuses it). Longer is in
// TestSourceHostileServers.
func TestSourceContentLengthLies(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	rel, err := (&Source{Base: "file://" + tr.dir, Key: k.pubPEM}).Release(context.Background(), tr.v)
	if err != nil {
		t.Fatal(err)
	}
	archive := string(tr.files[tr.archive])
	for cl, want := range map[string]string{
		fmt.Sprint(len(archive) - 1): "does not match SHA256SUMS",
		"-1":                         "Content-Length",
		"0x10":                       "Content-Length",
	} {
		base := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: "+cl+"\r\nConnection: close\r\n\r\n"+archive)
		var dst bytes.Buffer
		err := (&Source{Base: base}).Download(context.Background(), rel, tr.archive, MaxArchiveSize, &dst, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Content-Length %s: %v; want an error saying %q", cl, err, want)
		}
	}
}

// A password in release_url (a private mirror) never shows in an error,
// nor does a query that may carry a token.
func TestSourceErrorsHideCredentials(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	tr := makeTree(t, k, "v0.3.1")
	srv := httptest.NewServer(http.FileServer(http.Dir(tr.dir)))
	defer srv.Close()
	base := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1)
	s := &Source{Base: base, Key: k.pubPEM}
	ctx := context.Background()
	rel, err := s.Release(ctx, tr.v)
	if err != nil {
		t.Fatal(err)
	}
	v9, _ := ParseVersion("v9.9.9")
	var errs []error
	_, err = s.Release(ctx, v9)
	errs = append(errs, err)
	if err := os.Remove(filepath.Join(tr.dir, tr.v.String(), tr.archive)); err != nil {
		t.Fatal(err)
	}
	errs = append(errs, s.Download(ctx, rel, tr.archive, MaxArchiveSize, &bytes.Buffer{}, nil))
	if err := os.Remove(filepath.Join(tr.dir, LatestFile)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Latest(ctx)
	errs = append(errs, err)
	for _, b := range []string{"http://user:s3cret@h.invalid/%zz", "http://user:s3cret@h.invalid/r?s3cret", "ftp://user:s3cret@h.invalid/"} {
		_, err := (&Source{Base: b}).Latest(ctx)
		errs = append(errs, err)
	}
	for i, err := range errs {
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %d: %v; want one without the secret", i, err)
		}
	}
}

func TestSourceRedacted(t *testing.T) {
	for base, want := range map[string]string{
		"https://user:s3cret@h.invalid/r": "https://user:xxxxx@h.invalid/r",
		"https://h.invalid/r":             "https://h.invalid/r",
		"http://h.invalid/%zz":            "(a release_url that does not parse)",
	} {
		if got := (&Source{Base: base}).Redacted(); got != want {
			t.Errorf("Redacted(%q) = %q, want %q", base, got, want)
		}
	}
}
