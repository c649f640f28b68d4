package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func goodEntries() []tarEntry {
	sparse := make([]byte, 4<<20)
	copy(sparse[1<<20:], "middle")
	copy(sparse[len(sparse)-3:], "end")
	return []tarEntry{
		dir("bin/", 0o755),
		file("bin/tool", 0o755, "#!/bin/sh\necho hi\n"),
		hardlink("bin/tool2", "bin/tool"),
		symlink("latest", "bin/tool"),
		symlink("abs-link", "/usr/bin/env"), // kept as-is, never followed
		file("secret", 0o600, "s3cret"),
		{name: "rootfs.ext4", typ: tar.TypeReg, mode: 0o644, body: sparse},
		file("deep/a/b/c.txt", 0o640, "implicit parents"),
		dir("ro/", 0o555),
		file("ro/inside", 0o444, "read-only dir content"),
		file("manifest.json", 0o644, `{"name":"test"}`),
	}
}

func TestFetchGoodBundle(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	srv := serveBytes(t, data)
	parent := t.TempDir()
	dest := filepath.Join(parent, "img")
	t.Cleanup(func() { removeTree(dest) }) // it holds a read-only directory
	rec := &recorder{}

	res, err := Fetch(context.Background(), srv.source(data), dest, rec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dest != dest || res.Cached || res.Bytes != int64(len(data)) {
		t.Errorf("result = %+v, want dest %s, not cached, %d bytes", res, dest, len(data))
	}
	if got := listDir(t, parent); !slices.Equal(got, []string{"img"}) {
		t.Errorf("parent holds %v, want only img (no temp dir, no lock file)", got)
	}

	for name, want := range map[string]string{
		"bin/tool": "#!/bin/sh\necho hi\n", "secret": "s3cret", "deep/a/b/c.txt": "implicit parents",
		"ro/inside": "read-only dir content", "manifest.json": `{"name":"test"}`,
	} {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	for name, want := range map[string]fs.FileMode{
		"bin/tool": 0o755, "secret": 0o600, "deep/a/b/c.txt": 0o640, "ro/inside": 0o444,
		"bin": fs.ModeDir | 0o755, "ro": fs.ModeDir | 0o555, "deep": fs.ModeDir | 0o755, ".": fs.ModeDir | 0o755,
	} {
		fi, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("mode of %s = %v, want %v", name, fi.Mode(), want)
		}
	}
	for link, want := range map[string]string{"latest": "bin/tool", "abs-link": "/usr/bin/env"} {
		if got, err := os.Readlink(filepath.Join(dest, link)); err != nil || got != want {
			t.Errorf("symlink %s -> %q, %v; want %q", link, got, err, want)
		}
	}
	a, _ := os.Stat(filepath.Join(dest, "bin/tool"))
	b, _ := os.Stat(filepath.Join(dest, "bin/tool2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("bin/tool2 is not a hard link of bin/tool")
	}

	sparse, err := os.ReadFile(filepath.Join(dest, "rootfs.ext4"))
	if err != nil || !bytes.Equal(sparse, goodEntries()[6].body) {
		t.Fatalf("rootfs.ext4 content differs (%v)", err)
	}
	fi, _ := os.Stat(filepath.Join(dest, "rootfs.ext4"))
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 >= fi.Size() {
		t.Errorf("rootfs.ext4 uses %d bytes of disk for %d bytes: zero runs were not left as holes", st.Blocks*512, fi.Size())
	}
	if _, err := os.Stat(filepath.Join(dest, MarkerName)); err != nil {
		t.Errorf("marker missing: %v", err)
	}

	if rec.total != int64(len(data)) || rec.unit != "bytes" || rec.added != int64(len(data)) {
		t.Errorf("progress total %d %s, added %d; want %d bytes both", rec.total, rec.unit, rec.added, len(data))
	}
	if !slices.Equal(rec.phases, []string{PhaseDownload, PhaseSync, PhaseInstall}) {
		t.Errorf("phases %v", rec.phases)
	}
}

func TestFetchKeepsOwnershipAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user")
	}
	raw := rawTarWith(t, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "owned", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1234, Gid: 5678, Size: 1})
		tw.Write([]byte("x"))
		tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 42, Gid: 43})
	})
	data := compress(t, raw)
	srv := serveBytes(t, data)
	dest := filepath.Join(t.TempDir(), "d")
	if _, err := Fetch(context.Background(), srv.source(data), dest, nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]uint32{"owned": {1234, 5678}, "d": {42, 43}} {
		fi, err := os.Lstat(filepath.Join(dest, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
		}
	}
	fi, _ := os.Stat(filepath.Join(dest, "owned"))
	if fi.Mode() != fs.ModeSetuid|0o755 {
		t.Errorf("owned mode %v, want setuid 0755 (chown must come before chmod)", fi.Mode())
	}
}

func rawTarWith(t *testing.T, f func(*tar.Writer)) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	f(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFetchFileURLAndPackRoundTrip(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "modules/lib"), 0o755))
	must(os.WriteFile(filepath.Join(src, "vmlinux"), bytes.Repeat([]byte("kernel"), 10000), 0o644))
	must(os.WriteFile(filepath.Join(src, "modules/lib/m.ko"), []byte("module"), 0o600))
	must(os.Link(filepath.Join(src, "modules/lib/m.ko"), filepath.Join(src, "modules/lib/m2.ko")))
	must(os.Symlink("lib/m.ko", filepath.Join(src, "modules/link")))
	must(os.WriteFile(filepath.Join(src, "manifest.json"), []byte("{}"), 0o644))

	bundlePath := filepath.Join(t.TempDir(), "k.tar.zst")
	f, err := os.Create(bundlePath)
	must(err)
	digest, size, err := Pack(context.Background(), src, f)
	must(err)
	must(f.Close())
	data, err := os.ReadFile(bundlePath)
	must(err)
	if sum(data) != digest || int64(len(data)) != size {
		t.Fatalf("Pack reported %s/%d, file is %s/%d", digest, size, sum(data), len(data))
	}
	var again bytes.Buffer
	digest2, _, err := Pack(context.Background(), src, &again)
	must(err)
	if digest2 != digest {
		t.Errorf("Pack is not deterministic: %s then %s", digest, digest2)
	}

	dest := filepath.Join(t.TempDir(), "k")
	res, err := Fetch(context.Background(), Source{URL: "file://" + bundlePath, SHA256: digest, Size: size}, dest, nil)
	must(err)
	if res.Bytes != size {
		t.Errorf("Bytes = %d, want %d", res.Bytes, size)
	}
	for _, name := range []string{"vmlinux", "modules/lib/m.ko", "manifest.json"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after round trip (%v)", name, err)
		}
	}
	fi, _ := os.Stat(filepath.Join(dest, "modules/lib/m.ko"))
	fi2, _ := os.Stat(filepath.Join(dest, "modules/lib/m2.ko"))
	if fi == nil || fi2 == nil || !os.SameFile(fi, fi2) || fi.Mode() != 0o600 {
		t.Errorf("hard link or mode lost in round trip")
	}
	if l, err := os.Readlink(filepath.Join(dest, "modules/link")); err != nil || l != "lib/m.ko" {
		t.Errorf("symlink lost: %q %v", l, err)
	}

	// A wrong size for a file URL fails before anything is written.
	_, err = Fetch(context.Background(), Source{URL: "file://" + bundlePath, SHA256: digest, Size: size + 1}, filepath.Join(t.TempDir(), "x"), nil)
	if err == nil || !strings.Contains(err.Error(), strconv.FormatInt(size, 10)) || !strings.Contains(err.Error(), strconv.FormatInt(size+1, 10)) {
		t.Errorf("wrong size error = %v", err)
	}
}

func TestPackRefusesSpecialFiles(t *testing.T) {
	src := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	_, _, err := Pack(context.Background(), src, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("Pack of a FIFO: %v", err)
	}
}

func TestFetchCachedIsNoOp(t *testing.T) {
	data := makeBundle(t, file("a", 0o644, "one"))
	srv := serveBytes(t, data)
	dest := filepath.Join(t.TempDir(), "d")
	if _, err := Fetch(context.Background(), srv.source(data), dest, nil); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	res, err := Fetch(context.Background(), srv.source(data), dest, rec)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cached || res.Bytes != 0 {
		t.Errorf("second fetch = %+v, want cached", res)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	if rec.added != 0 {
		t.Errorf("cached fetch reported %d bytes of progress", rec.added)
	}
}

func TestFetchReplacesOlderBundle(t *testing.T) {
	oldData := makeBundle(t, file("a", 0o644, "old"), file("only-old", 0o644, "x"))
	newData := makeBundle(t, file("a", 0o644, "new"))
	oldSrv, newSrv := serveBytes(t, oldData), serveBytes(t, newData)
	parent := t.TempDir()
	dest := filepath.Join(parent, "d")
	if _, err := Fetch(context.Background(), oldSrv.source(oldData), dest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), newSrv.source(newData), dest, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "a")); string(got) != "new" {
		t.Errorf("a = %q after replacing, want new", got)
	}
	if _, err := os.Stat(filepath.Join(dest, "only-old")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old bundle's file survived the replacement: %v", err)
	}
	if got := listDir(t, parent); !slices.Equal(got, []string{"d"}) {
		t.Errorf("parent holds %v after replacing", got)
	}
}

func TestFetchRefusesForeignDest(t *testing.T) {
	data := makeBundle(t, file("a", 0o644, "x"))
	srv := serveBytes(t, data)
	parent := t.TempDir()
	dest := filepath.Join(parent, "d")
	if err := os.MkdirAll(filepath.Join(dest, "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Fetch(context.Background(), srv.source(data), dest, nil)
	if err == nil || !strings.Contains(err.Error(), "not unpacked from a bundle") {
		t.Fatalf("fetch over a foreign directory: %v", err)
	}
	if got := listDir(t, dest); !slices.Equal(got, []string{"mine"}) {
		t.Errorf("foreign dest changed: %v", got)
	}
	if got := listDir(t, parent); !slices.Equal(got, []string{"d"}) {
		t.Errorf("parent changed: %v", got)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests for a fetch that should not start", n)
	}
}

func TestFetchBadInputChangesNothing(t *testing.T) {
	data := makeBundle(t, file("a", 0o644, "x"))
	srv := serveBytes(t, data)
	good := srv.source(data)
	cases := map[string]Source{
		"ftp scheme":   {URL: "ftp://h/b", SHA256: good.SHA256, Size: good.Size},
		"relative URL": {URL: "b.tar.zst", SHA256: good.SHA256, Size: good.Size},
		"file no path": {URL: "file://host/b", SHA256: good.SHA256, Size: good.Size},
		"short sha":    {URL: good.URL, SHA256: "abc", Size: good.Size},
		"non-hex sha":  {URL: good.URL, SHA256: strings.Repeat("g", 64), Size: good.Size},
		"zero size":    {URL: good.URL, SHA256: good.SHA256, Size: 0},
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			if _, err := Fetch(context.Background(), src, filepath.Join(parent, "d"), nil); err == nil {
				t.Fatal("no error")
			}
			if got := listDir(t, parent); len(got) != 0 {
				t.Errorf("parent holds %v", got)
			}
		})
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests made for bad input", n)
	}
}

// failAndCheck runs a fetch that must fail, and checks that the error
// mentions every want and that the parent directory is as it was.
func failAndCheck(t *testing.T, src Source, wants ...string) {
	t.Helper()
	parent := t.TempDir()
	if err := os.WriteFile(filepath.Join(parent, "neighbour"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, parent)
	_, err := Fetch(context.Background(), src, filepath.Join(parent, "d"), nil)
	if err == nil {
		t.Fatal("fetch succeeded, want an error")
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if after := listDir(t, parent); !slices.Equal(before, after) {
		t.Errorf("parent was %v, is %v after a failed fetch", before, after)
	}
}

func TestFetchBadSHA256(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	srv := serveBytes(t, data)
	src := srv.source(data)
	wrong := sum([]byte("something else"))
	src.SHA256 = wrong
	failAndCheck(t, src, "sha256", wrong, sum(data), src.URL)
}

func TestFetchCorruptBody(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	srv := serveBytes(t, bad)
	src := srv.source(data) // the catalog's (correct) digest
	failAndCheck(t, src, "sha256", sum(data), sum(bad))
}

func TestFetchTruncated(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	half := len(data) / 2
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:half])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection
	})
	failAndCheck(t, srv.source(data), fmt.Sprintf("ended after %d of %d bytes", half, len(data)), srv.URL)
}

func TestFetchStreamShorterOrLongerThanSize(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	chunked := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // no Content-Length: chunked
			w.Write(body)
		}
	}
	t.Run("short", func(t *testing.T) {
		srv := serve(t, chunked(data[:len(data)-10]))
		failAndCheck(t, srv.source(data), fmt.Sprintf("ended after %d of %d bytes", len(data)-10, len(data)))
	})
	t.Run("long", func(t *testing.T) {
		srv := serve(t, chunked(append(bytes.Clone(data), "trailing junk"...)))
		failAndCheck(t, srv.source(data), "longer than", strconv.Itoa(len(data)))
	})
}

func TestFetchWrongContentLength(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	srv := serveBytes(t, data)
	src := srv.source(data)
	src.Size++
	failAndCheck(t, src, strconv.Itoa(len(data)), strconv.FormatInt(src.Size, 10), "catalog")
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d requests", n)
	}
}

func TestFetchNotFound(t *testing.T) {
	data := makeBundle(t, file("a", 0o644, "x"))
	srv := serveBytes(t, data)
	src := srv.source(data)
	src.URL = srv.URL + "/missing.tar.zst"
	failAndCheck(t, src, "404", src.URL)
}

func TestFetchRefusesEscapingEntries(t *testing.T) {
	cases := map[string]struct {
		entries []tarEntry
		name    string // what the error must name
	}{
		"dotdot":                {[]tarEntry{file("../x", 0o644, "evil")}, "../x"},
		"nested dotdot":         {[]tarEntry{file("a/../../x", 0o644, "evil")}, "a/../../x"},
		"absolute":              {[]tarEntry{file("/abs", 0o644, "evil")}, "/abs"},
		"through symlink":       {[]tarEntry{symlink("l", "../outside"), file("l/x", 0o644, "evil")}, "l/x"},
		"through abs symlink":   {[]tarEntry{symlink("l", "/tmp"), file("l/x", 0o644, "evil")}, "l/x"},
		"through inner symlink": {[]tarEntry{dir("d/", 0o755), symlink("l", "d"), file("l/x", 0o644, "evil")}, "l/x"},
		"hardlink outside":      {[]tarEntry{hardlink("h", "../outside/file")}, "h"},
		"hardlink absolute":     {[]tarEntry{hardlink("h", "/etc/passwd")}, "h"},
		"hardlink to symlink":   {[]tarEntry{symlink("l", "/etc/passwd"), hardlink("h", "l")}, "h"},
		"hardlink via symlink":  {[]tarEntry{symlink("l", "/etc"), hardlink("h", "l/passwd")}, "h"},
		"device":                {[]tarEntry{{name: "dev", typ: tar.TypeChar, mode: 0o644}}, "dev"},
		"fifo":                  {[]tarEntry{{name: "p", typ: tar.TypeFifo, mode: 0o644}}, "p"},
		"marker":                {[]tarEntry{file(MarkerName, 0o644, `{"sha256":"x"}`)}, MarkerName},
		"dir over file":         {[]tarEntry{dir("d/", 0o755), file("d", 0o644, "x")}, "d"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			data := makeBundle(t, c.entries...)
			srv := serveBytes(t, data)
			top := t.TempDir()
			outside := filepath.Join(top, "outside")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			parent := filepath.Join(top, "parent")
			if err := os.Mkdir(parent, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Fetch(context.Background(), srv.source(data), filepath.Join(parent, "d"), nil)
			if err == nil || !strings.Contains(err.Error(), strconv.Quote(c.name)) {
				t.Fatalf("error %v does not name entry %q", err, c.name)
			}
			if got := listDir(t, parent); len(got) != 0 {
				t.Errorf("parent holds %v after a refused bundle", got)
			}
			if got := listDir(t, top); !slices.Equal(got, []string{"outside", "parent"}) {
				t.Errorf("something was written beside the parent: %v", got)
			}
			if got := listDir(t, outside); len(got) != 0 {
				t.Errorf("something was written outside: %v", got)
			}
		})
	}
}

func TestFetchCancelMidway(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/3])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // stall until the client gives up
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{onAdd: func(int64) { cancel() }}
	parent := t.TempDir()
	_, err := Fetch(ctx, srv.source(data), filepath.Join(parent, "d"), rec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if got := listDir(t, parent); len(got) != 0 {
		t.Errorf("parent holds %v after cancellation", got)
	}
}

func TestFetchConcurrentSameDestDownloadsOnce(t *testing.T) {
	data := makeBundle(t, goodEntries()...)
	release := make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
	})
	dest := filepath.Join(t.TempDir(), "d")
	t.Cleanup(func() { removeTree(dest) }) // it holds a read-only directory
	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { results[i], errs[i] = Fetch(context.Background(), srv.source(data), dest, nil) })
	}
	// Wait until both calls are inside Fetch (one holding the lock, one
	// waiting for it), then let the download go.
	for refs(dest) < 2 {
		runtimeYield()
	}
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	if results[0].Cached == results[1].Cached {
		t.Errorf("want exactly one cached result, got %+v", results)
	}
}

func TestFetchWaitsForOtherProcessLock(t *testing.T) {
	data := makeBundle(t, file("a", 0o644, "x"))
	srv := serveBytes(t, data)
	dest := filepath.Join(t.TempDir(), "d")
	// Another process's fetch: a lock on dest.lock through a separate open
	// file, which flock treats exactly like another process.
	other, err := lockFile(context.Background(), dest+".lock")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, srv.source(data), dest, nil)
		done <- err
	}()
	for openCount(t, dest+".lock") < 2 {
		runtimeYield()
	}
	cancel()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "lock") || !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch while another holds the lock: %v", err)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("fetch downloaded (%d requests) while another process held the lock", n)
	}
	other.unlock()
	if _, err := Fetch(context.Background(), srv.source(data), dest, nil); err != nil {
		t.Fatalf("fetch after the lock was released: %v", err)
	}
}
