package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"banger/internal/release"
	"banger/internal/testutil/treestate"
	"banger/internal/update"
)

// testRelease serves release v (archive bytes given; units dummy) signed
// by a key made for the test, and returns its Source. archiveHandler, if
// set, serves the archive instead of its bytes.
func testRelease(t *testing.T, v release.Version, archive []byte, archiveHandler http.HandlerFunc) *release.Source {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	name := release.ArchiveName(v, runtime.GOARCH)
	files := map[string][]byte{name: archive, "bangerd.service": []byte("[Unit]\n"), "banger-helper.service": []byte("[Unit]\n")}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var sums strings.Builder
	for _, n := range names {
		d := sha256.Sum256(files[n])
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	digest := sha256.Sum256([]byte(sums.String()))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	dir := "/" + v.String() + "/"
	mux.HandleFunc(dir+release.SumsFile, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, sums.String()) })
	mux.HandleFunc(dir+release.SigFile, func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, base64.StdEncoding.EncodeToString(sig)+"\n")
	})
	mux.HandleFunc(dir+name, func(w http.ResponseWriter, r *http.Request) {
		if archiveHandler != nil {
			archiveHandler(w, r)
			return
		}
		w.Write(archive)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &release.Source{Base: srv.URL, Key: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

// releaseArchive is a well-formed release archive of small files.
func releaseArchive(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	names := append([]string(nil), release.ArchiveFiles...)
	sort.Strings(names)
	for _, n := range names {
		body := bytes.Repeat([]byte(n+"\n"), 4096)
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}

func newFetchApp() *app {
	return &app{stdout: io.Discard, stderr: io.Discard, quiet: true, getenv: os.Getenv}
}

// Ctrl-C during the download (the context cancelled, as the update's
// signal handling does) removes what was downloaded and says nothing was
// changed.
func TestFetchReleaseInterruptedRemovesItsFiles(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	v, _ := release.ParseVersion("v0.0.2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := testRelease(t, v, make([]byte, 1<<20), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(1<<20))
		w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		cancel() // Ctrl-C, half way
		<-r.Context().Done()
	})
	in := &update.Install{Dir: t.TempDir()}
	before := treestate.Snapshot(t, in.Dir)
	_, _, cleanup, err := newFetchApp().fetchRelease(ctx, src, in, v)
	if cleanup != nil {
		cleanup()
	}
	if err == nil || !strings.Contains(err.Error(), "interrupted while downloading "+release.ArchiveName(v, runtime.GOARCH)+"; nothing was changed") {
		t.Fatalf("fetchRelease: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	if after := treestate.Snapshot(t, in.Dir); len(after) != len(before) {
		t.Errorf("the install changed: %v", after)
	}
}

// A full filesystem under the install (a real tmpfs, filled) fails the
// unpacking: the staging directory is removed, nothing else changed, and
// the message says so.
func TestFetchReleaseOnAFullDiskChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	for _, n := range update.Binaries {
		if err := os.WriteFile(filepath.Join(mnt, n), []byte("v0.0.1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filler, _ := os.Create(filepath.Join(mnt, "filler"))
	for i := 0; i < 24; i++ { // leave a little room: the archive needs more
		filler.Write(make([]byte, 4096))
	}
	filler.Close()
	t.Setenv("TMPDIR", t.TempDir())
	v, _ := release.ParseVersion("v0.0.2")
	src := testRelease(t, v, releaseArchive(t), nil)
	in := &update.Install{Dir: mnt}
	before := treestate.Snapshot(t, mnt)
	_, _, cleanup, err := newFetchApp().fetchRelease(context.Background(), src, in, v)
	if cleanup != nil {
		cleanup()
	}
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.HasSuffix(err.Error(), "nothing was changed") {
		t.Fatalf("fetchRelease on a full disk: %v", err)
	}
	if after := treestate.Snapshot(t, mnt); len(after) != len(before) {
		t.Errorf("the install changed:\nbefore %v\nafter  %v", before, after)
	}
}
