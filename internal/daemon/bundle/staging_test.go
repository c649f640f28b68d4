package bundle

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUnverifiedTreeIsPrivate: a bundle is unpacked before its digest
// can be checked, with its modes (setuid included) and, as root, its
// owners. Until it is verified the staging directory must let no other
// user in, or a local user could run a setuid file of a stream that then
// fails verification; an archive naming "./" must not open it either.
func TestUnverifiedTreeIsPrivate(t *testing.T) {
	data := makeBundle(t, dir("./", 0o755), file("suid", 0o4755, "#!/bin/sh\n"), dir("d", 0o755))
	release := make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(data) // chunked: the fetch waits for the end
		w.(http.Flusher).Flush()
		<-release
	})
	src := srv.source(data)
	src.SHA256 = sum([]byte("not this stream"))
	parent := t.TempDir()
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Fetch(context.Background(), src, filepath.Join(parent, "b"), nil); done <- err }()
	var staged string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		m, _ := filepath.Glob(filepath.Join(parent, ".tmp-b-*", "d"))
		if len(m) == 1 {
			staged = filepath.Dir(m[0])
			break
		}
	}
	time.Sleep(50 * time.Millisecond) // let the extraction finish its directories
	var mode os.FileMode
	if fi, err := os.Stat(staged); err == nil {
		mode = fi.Mode().Perm()
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("a bundle with the wrong digest was installed")
	}
	if staged == "" {
		t.Fatal("never saw the staging directory")
	}
	if mode&0o077 != 0 {
		t.Fatalf("the unverified tree %s was mode %v while it held a setuid file", staged, mode)
	}
}
