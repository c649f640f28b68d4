package cli

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"banger/internal/catalog"
	"banger/internal/config"
	"banger/internal/rpc"
)

func TestFirstRunText(t *testing.T) {
	build := catalog.Entry{Name: "debian-bookworm", Build: &catalog.Recipe{Kind: "debootstrap", Params: map[string]string{"suite": "bookworm"}}}
	got := firstRunText(build)
	for _, want := range []string{"image debian-bookworm is not here yet", "builds it first", "debootstrap of Debian bookworm", "about 1 to 5 minutes", "once"} {
		if !strings.Contains(got, want) {
			t.Errorf("build notice lacks %q: %s", want, got)
		}
	}
	bundle := build
	bundle.Bundle = &catalog.Bundle{URL: "x.tar.zst", Size: 300 << 20}
	if got := firstRunText(bundle); !strings.Contains(got, "downloads it first (300 MiB") {
		t.Errorf("bundle notice: %s", got)
	}
	if got := firstRunText(catalog.Entry{Name: "x"}); got != "" {
		t.Errorf("an entry with neither bundle nor recipe got a notice: %s", got)
	}
}

// fakeImages serves GET /v1/images/{name} on a unix socket: 404 (the API's
// not_found) unless present, and counts the requests.
func fakeImages(t *testing.T, present *atomic.Bool, hits *atomic.Int32) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !present.Load() {
			rpc.WriteError(w, rpc.Errorf(rpc.CodeNotFound, "image %q: not found", r.PathValue("name")))
			return
		}
		rpc.WriteJSON(w, http.StatusOK, rpc.Image{Name: r.PathValue("name")})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }() // owned: closed in Cleanup
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// The first `vm run` says up front that the default image is built first;
// once the image is here, or with --quiet, or for a name the catalog does
// not know, it says nothing.
func TestFirstRunNotice(t *testing.T) {
	var present atomic.Bool
	var hits atomic.Int32
	sock := fakeImages(t, &present, &hits)
	run := func(image string, quiet bool) string {
		var stderr bytes.Buffer
		a := &app{stderr: &stderr, quiet: quiet, client: rpc.NewClient(sock),
			loaded: &config.Loaded{Config: config.Config{DefaultImageName: "debian-bookworm"}}}
		a.firstRunNotice(context.Background(), image)
		return stderr.String()
	}
	got := run("", false)
	if !strings.HasPrefix(got, "banger: image debian-bookworm is not here yet: bangerd builds it first") || !strings.Contains(got, "1 to 5 minutes") {
		t.Errorf("first run of the default image: %q", got)
	}
	if got := run("", true); got != "" {
		t.Errorf("with --quiet: %q", got)
	}
	before := hits.Load()
	if got := run("not-in-the-catalog", false); got != "" {
		t.Errorf("an image the catalog does not know: %q", got)
	}
	if hits.Load() != before {
		t.Error("asked the daemon about an image the catalog does not know")
	}
	present.Store(true)
	if got := run("debian-bookworm", false); got != "" {
		t.Errorf("image already here: %q", got)
	}
}
