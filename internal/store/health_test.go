package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testutil"
)

// fillOperations puts enough rows in the store to span many pages.
func fillOperations(t *testing.T, s *Store, n int) {
	t.Helper()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		if err := s.PutOperation(context.Background(), Operation{
			ID: fmt.Sprintf("op-%012x", i), Kind: "image.pull", Target: strings.Repeat("t", 200),
			State: StateSucceeded, CreatedAt: now,
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenFindsCorruptStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	fillOperations(t, s, 500)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A backup beside it, named in the message.
	if err := os.WriteFile(path+".bak-v4", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 20*4096 {
		t.Fatalf("store is only %d bytes", len(data))
	}
	// Damage a page in the middle of the operations table; the version
	// (page 1 and the schema_version table) still reads fine.
	copy(data[len(data)/2/4096*4096:], bytes.Repeat([]byte{0xa5}, 4096))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	_, err = Open(ctx, path)
	t.Logf("error: %v", err)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("Open of a damaged store = %v, want a *CorruptError", err)
	}
	for _, want := range []string{path, "is damaged", "quick_check", path + ".bak-v4", "--adopt-store"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	sameFiles(t, before, snapshot(t, dir))

	if _, err := Inspect(ctx, path); !errors.As(err, &ce) {
		t.Errorf("Inspect of a damaged store = %v, want a *CorruptError", err)
	}
}

func TestOpenRejectsNonDatabaseAsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a database\n"), 500), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), path)
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "not an SQLite database") {
		t.Fatalf("Open = %v, want a *CorruptError saying it is not a database", err)
	}
	if strings.Contains(err.Error(), "is this a banger store") {
		t.Errorf("error still asks %q", err)
	}
}

// asNobody runs the named test again as nobody, with env set, when this
// process is root (root may write any file, so a read-only file is only
// read-only for someone else). It reports whether the caller is that
// child and should do the work itself.
func asNobody(t *testing.T, dir string, env ...string) (child bool) {
	t.Helper()
	if os.Getenv("STORE_TEST_CHILD") == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		return true
	}
	bin := testutil.CopyTestBinary(t, dir, "store.test")
	for p := dir; p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if strings.HasPrefix(p, os.TempDir()) {
				if err := os.Chmod(p, fi.Mode().Perm()|0o005); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Skipf("%s is not searchable by nobody", p)
		}
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append([]string{"STORE_TEST_CHILD=1", "PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
	return false
}

// readOnlyStore makes a store, owned by nobody when run as root, and
// returns its path.
func readOnlyStore(t *testing.T, fileMode, dirMode os.FileMode) string {
	t.Helper()
	if p := os.Getenv("STORE_TEST_PATH"); p != "" {
		return p
	}
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, path, path + "-wal", path + "-shm"} {
		if os.Geteuid() == 0 {
			if err := os.Chown(p, 65534, 65534); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(path, fileMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		t.Fatal(err)
	}
	return path
}

func checkReadOnly(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	_, err := Open(context.Background(), path)
	var nw *NotWritableError
	if !errors.As(err, &nw) {
		t.Fatalf("Open of a read-only store = %v, want a *NotWritableError", err)
	}
	t.Logf("error: %v", err)
	for _, w := range []string{want, "not writable by uid", fmt.Sprintf("mode %04o", mode)} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "is this a banger store") {
		t.Errorf("error still asks %q", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o400 && fi.Mode().Perm() != 0o600 {
		t.Errorf("the store's mode was changed to %o", fi.Mode().Perm())
	}
}

func TestOpenReadOnlyFile(t *testing.T) {
	path := readOnlyStore(t, 0o400, 0o700)
	if !asNobody(t, filepath.Dir(filepath.Dir(path)), "STORE_TEST_PATH="+path) {
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o400 {
			t.Errorf("mode of the store is now %o, want 400 (never chmod the user's file)", fi.Mode().Perm())
		}
		return
	}
	checkReadOnly(t, path, "store "+path, 0o400)
}

func TestOpenReadOnlyDir(t *testing.T) {
	path := readOnlyStore(t, 0o600, 0o500)
	if !asNobody(t, filepath.Dir(filepath.Dir(path)), "STORE_TEST_PATH="+path) {
		return
	}
	checkReadOnly(t, path, "state dir "+filepath.Dir(path), 0o500)
}

func TestBackupBeforeEachMigration(t *testing.T) {
	ctx := context.Background()
	all := allMigrations(t)
	path := filepath.Join(t.TempDir(), "banger.db")
	old := openTest(t, path, all[:2])
	seeders[1](t, old)
	seeders[2](t, old)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if bs := Backups(path); len(bs) != 0 {
		t.Fatalf("backups of a new store: %v", bs)
	}
	// One upgrade at a time, each backed up first.
	for k := 3; k <= len(all); k++ {
		s := openTest(t, path, all[:k])
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		bak := fmt.Sprintf("%s.bak-v%d", path, k-1)
		fi, err := os.Stat(bak)
		if err != nil {
			t.Fatalf("no backup before migration %d: %v", k, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 600", bak, fi.Mode().Perm())
		}
		in, err := Inspect(ctx, bak)
		if err != nil || in.Version != k-1 {
			t.Fatalf("backup %s: version %d, %v; want %d", bak, in.Version, err, k-1)
		}
	}
	// The newest backup holds the rows as they were.
	newest := len(all) - 1
	b, err := openWith(ctx, fmt.Sprintf("%s.bak-v%d", path, newest), all[:newest])
	if err != nil {
		t.Fatal(err)
	}
	checkers[1](t, b)
	checkers[2](t, b)
	_ = b.Close()
	// Only the newest keepBackups are kept.
	bs := Backups(path)
	if len(bs) != keepBackups || bs[0] != fmt.Sprintf("%s.bak-v%d", path, len(all)-1) {
		t.Errorf("backups = %v, want the newest %d", bs, keepBackups)
	}
	// Opening a current store makes none.
	openTest(t, path, all)
	if n := len(Backups(path)); n != keepBackups {
		t.Errorf("%d backups after opening a current store", n)
	}
}

func TestCheckFileNoticesDeleteAndReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	if err := s.CheckFile(); err != nil {
		t.Fatalf("CheckFile of an untouched store: %v", err)
	}
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckFile(); !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("CheckFile after delete = %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckFile(); !errors.Is(err, ErrFileChanged) || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("CheckFile after replace = %v", err)
	}
}

func TestFailedBackupLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "banger.db")
	s := openTest(t, path, allMigrations(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A closed store cannot VACUUM INTO: the backup fails after its
	// temporary file was made.
	err := s.backup(context.Background(), 7)
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("backup on a closed store: %v, want a failure saying nothing was changed", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".bak-v7") {
			t.Errorf("a failed backup left %s", e.Name())
		}
	}
}
