package bundle

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func refs(key string) int { return inProcess.Users(key) }

// runtimeYield lets other goroutines run while a test waits for a state it
// can observe; it is a poll interval, not a timing assertion.
func runtimeYield() { time.Sleep(time.Millisecond) }

// openCount counts this process's open descriptors on path.
func openCount(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// FuzzExtract feeds arbitrary bytes to the extraction path as the
// decompressed tar stream. It must never panic and never create anything
// outside the directory it unpacks into.
func FuzzExtract(f *testing.F) {
	f.Add(rawTar(f, goodEntries()[:6]))
	f.Add(rawTar(f, []tarEntry{file("../x", 0o644, "evil")}))
	f.Add(rawTar(f, []tarEntry{symlink("l", ".."), file("l/x", 0o644, "evil")}))
	f.Add(rawTar(f, []tarEntry{symlink("l", "/tmp"), hardlink("h", "l/x")}))
	f.Add(rawTar(f, []tarEntry{file("a", 0o644, "1"), file("a", 0o600, "2"), symlink("a", "b"), dir("a/", 0o755)}))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		top := t.TempDir()
		into := filepath.Join(top, "into")
		if err := os.Mkdir(into, 0o700); err != nil {
			t.Fatal(err)
		}
		// A small bound keeps each run quick; the bound is under test too.
		_ = unpack(context.Background(), bytes.NewReader(data), into, 16<<20)
		ents, err := os.ReadDir(top)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "into" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("extraction wrote beside its directory: %v", names)
		}
		removeTree(into)
	})
}

// BenchmarkFetch fetches a 64 MiB bundle (a disk-image-like mix of random
// data, text-like data and zeros) from a local HTTP server.
func BenchmarkFetch(b *testing.B) {
	const size = 64 << 20
	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += 1 << 20 {
		switch (off >> 20) % 4 {
		case 0: // incompressible
			for i := off; i < off+1<<20; i += 8 {
				v := rng.Uint64()
				for k := range 8 {
					img[i+k] = byte(v >> (8 * k))
				}
			}
		case 1: // compressible
			for i := off; i < off+1<<20; i++ {
				img[i] = "banger microvm rootfs "[i%22]
			}
		}
	}
	data := makeBundle(b, tarEntry{name: "rootfs.ext4", typ: '0', mode: 0o644, body: img}, file("manifest.json", 0o644, "{}"))
	srv := serve(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	src := Source{URL: srv.URL + "/b.tar.zst", SHA256: sum(data), Size: int64(len(data))}
	parent := b.TempDir()
	b.SetBytes(size)
	b.ReportMetric(float64(len(data))/size, "ratio")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dest := filepath.Join(parent, "d"+strconv.Itoa(i))
		if _, err := Fetch(context.Background(), src, dest, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		removeTree(dest)
		b.StartTimer()
	}
}

func TestExtractBoundsTotalSize(t *testing.T) {
	raw := rawTar(t, []tarEntry{file("a", 0o644, "123456"), file("b", 0o644, "78901")})
	err := unpack(context.Background(), bytes.NewReader(raw), t.TempDir(), 10)
	if err == nil || !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), "exceed 10 bytes") {
		t.Fatalf("error %v, want entry b refused for exceeding 10 bytes", err)
	}
}
