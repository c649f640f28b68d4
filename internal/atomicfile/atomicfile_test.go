package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// leftovers lists the temporary files left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("temporary files left in %s: %v", dir, l)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteFileNewAndReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "one\n" {
		t.Fatalf("content %q", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("default mode %o, want 600", fi.Mode().Perm())
	}
	if err := WriteFile(path, []byte("two\n"), Mode(0o644), NoSync()); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "two\n" {
		t.Fatalf("content %q", got)
	}
	noLeftovers(t, dir)
}

func TestModeIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, m := range []os.FileMode{0o644, 0o755, 0o400, 0o640} {
		path := filepath.Join(dir, fmt.Sprintf("f%o", m))
		if err := WriteFile(path, []byte("x"), Mode(m)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != m {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), m)
		}
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("reader broke")
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = 'n'
	}
	r.n -= n
	return n, nil
}

func TestFailingWriterLeavesOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := WriteFrom(path, &failingReader{n: 100 << 10}, Mode(0o600))
	if err == nil || !strings.Contains(err.Error(), "reader broke") || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want the reader's error naming %s", err, path)
	}
	if n != 100<<10 {
		t.Errorf("n = %d", n)
	}
	if got := readFile(t, path); got != "old" {
		t.Fatalf("old file changed to %d bytes", len(got))
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("old file's mode changed to %o", fi.Mode().Perm())
	}
	noLeftovers(t, dir)
}

func TestWriteFromWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	data := bytes.Repeat([]byte("abc"), 1<<16)
	n, err := WriteFrom(path, io.NewSectionReader(bytes.NewReader(data), 3, int64(len(data)-3)), Mode(0o600))
	if err != nil || n != int64(len(data)-3) {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if got := readFile(t, path); got != string(data[3:]) {
		t.Fatal("content differs")
	}
	noLeftovers(t, dir)
}

func TestNoTempLeftOnErrors(t *testing.T) {
	dir := t.TempDir()
	// The directory is missing.
	if err := WriteFile(filepath.Join(dir, "nodir", "f"), []byte("x")); err == nil || !strings.Contains(err.Error(), "nodir") {
		t.Fatalf("err = %v, want one naming the missing directory", err)
	}
	// The target is a directory: the rename fails.
	target := filepath.Join(dir, "d")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(target, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), target) {
		t.Fatalf("err = %v, want one naming %s", err, target)
	}
	if readFile(t, filepath.Join(target, "keep")) != "k" {
		t.Fatal("directory's content changed")
	}
	// Not a file name.
	if err := WriteFile(dir+"/..", []byte("x")); err == nil {
		t.Fatal("writing to .. succeeded")
	}
	// A failing chown: a user cannot give a file to root.
	if os.Geteuid() != 0 {
		if err := WriteFile(filepath.Join(dir, "owned"), []byte("x"), Owner(0, -1)); err == nil {
			t.Fatal("chown to root as a user succeeded")
		}
		if _, err := os.Lstat(filepath.Join(dir, "owned")); err == nil {
			t.Fatal("file written despite a failing chown")
		}
	}
	noLeftovers(t, dir)
}

func TestTargetSymlinkReplacedNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "f")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("target is %v, want a regular file", fi.Mode())
	}
	if readFile(t, victim) != "victim" {
		t.Fatal("write went through the symlink")
	}
	if readFile(t, path) != "new" {
		t.Fatal("new content missing")
	}
}

func TestTempSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "f")
	trap := ".f.tmp-trap"
	if err := os.Symlink(victim, filepath.Join(dir, trap)); err != nil {
		t.Fatal(err)
	}
	dangling := ".f.tmp-dangling"
	if err := os.Symlink(filepath.Join(dir, "created-through-link"), filepath.Join(dir, dangling)); err != nil {
		t.Fatal(err)
	}
	names := []string{trap, dangling}
	var drawn int
	orig := tempName
	tempName = func(base string) string {
		drawn++
		if len(names) > 0 {
			n := names[0]
			names = names[1:]
			return n
		}
		return orig(base)
	}
	defer func() { tempName = orig }()
	if err := WriteFile(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if drawn != 3 {
		t.Errorf("drew %d names, want 3 (two taken by symlinks)", drawn)
	}
	if readFile(t, victim) != "victim" {
		t.Fatal("wrote through a symlink at the temporary name")
	}
	if _, err := os.Lstat(filepath.Join(dir, "created-through-link")); err == nil {
		t.Fatal("created a file through a dangling symlink at the temporary name")
	}
	if readFile(t, path) != "new" {
		t.Fatal("new content missing")
	}
	for _, n := range []string{trap, dangling} {
		if fi, err := os.Lstat(filepath.Join(dir, n)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("someone else's %s was touched", n)
		}
	}
}

func TestTempNamesExhausted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".f.tmp-same"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	orig := tempName
	tempName = func(string) string { return ".f.tmp-same" }
	defer func() { tempName = orig }()
	err := WriteFile(filepath.Join(dir, "f"), []byte("x"))
	if err == nil || !errors.Is(err, os.ErrExist) {
		t.Fatalf("err = %v, want an exists error", err)
	}
}

func TestOwnerAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another owner")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("x"), Mode(0o640), Owner(4321, 8765)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4321 || st.Gid != 8765 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("owner %d:%d mode %o, want 4321:8765 640", st.Uid, st.Gid, fi.Mode().Perm())
	}
	// The set-group-ID bit survives the chown.
	if err := WriteFile(path, []byte("s"), Mode(0o750|os.ModeSetgid), Owner(4321, 8765)); err != nil {
		t.Fatal(err)
	}
	if fi, _ = os.Stat(path); fi.Mode()&os.ModeSetgid == 0 || fi.Mode().Perm() != 0o750 {
		t.Fatalf("mode %v, want setgid 0750", fi.Mode())
	}
	// -1 keeps the writer's group.
	if err := WriteFile(path, []byte("y"), Owner(4321, -1)); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(path)
	st = fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4321 || int(st.Gid) != os.Getegid() {
		t.Fatalf("owner %d:%d, want 4321:%d", st.Uid, st.Gid, os.Getegid())
	}
}

func TestConcurrentWritersLeaveWholeFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	const writers, rounds, size = 8, 20, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	stop := make(chan struct{})
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() { // reads while the writers run: every read sees one writer's whole file
		defer readerWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				continue // not written yet
			}
			if len(b) != size || bytes.Count(b, b[:1]) != size {
				errs <- fmt.Errorf("read a mixed or partial file of %d bytes", len(b))
				return
			}
		}
	}()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range rounds {
				if err := WriteFile(path, data, NoSync()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readerWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b := []byte(readFile(t, path))
	if len(b) != size || bytes.Count(b, b[:1]) != size {
		t.Fatalf("final file mixed or partial: %d bytes", len(b))
	}
	noLeftovers(t, dir)
}

func TestCreateCommitByName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	af, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Cleanup()
	if filepath.Dir(af.Name()) != dir || !strings.HasPrefix(filepath.Base(af.Name()), ".img.tmp-") {
		t.Fatalf("temporary name %s, want .img.tmp-* in %s", af.Name(), dir)
	}
	if err := af.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	// Another program writes the temporary file by name.
	if err := os.WriteFile(af.Name(), []byte("by name"), 0o600); err != nil {
		t.Fatal(err)
	}
	if readFile(t, path) != "old" {
		t.Fatal("target changed before Commit")
	}
	if err := af.Commit(); err != nil {
		t.Fatal(err)
	}
	if readFile(t, path) != "by name" {
		t.Fatal("committed content differs")
	}
	af.Cleanup() // no-op after Commit
	if readFile(t, path) != "by name" {
		t.Fatal("Cleanup after Commit removed the file")
	}
	if err := af.Commit(); err == nil {
		t.Fatal("second Commit succeeded")
	}
	noLeftovers(t, dir)
}

func TestCleanupRemovesUncommitted(t *testing.T) {
	dir := t.TempDir()
	af, err := Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := af.Write([]byte("half")); err != nil {
		t.Fatal(err)
	}
	if len(leftovers(t, dir)) != 1 {
		t.Fatal("no temporary file while writing")
	}
	af.Cleanup()
	af.Cleanup()
	noLeftovers(t, dir)
	if _, err := os.Lstat(filepath.Join(dir, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target exists after Cleanup: %v", err)
	}
}
