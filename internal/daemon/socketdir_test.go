package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenNarrowsALooseSocketDir: a runtime dir that was there already,
// reachable by others, is narrowed to 0700 before the socket is bound, so
// nobody can connect in the moment before the socket's own chmod.
func TestListenNarrowsALooseSocketDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := listen(filepath.Join(dir, "bangerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir left at mode %o, want 0700", fi.Mode().Perm())
	}
}

// TestListenRefusesAnotherUsersSocketDir: a socket dir of another user
// (one who could swap the socket) is refused, saying whose it is.
func TestListenRefusesAnotherUsersSocketDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := listen(filepath.Join(dir, "bangerd.sock"))
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("listen in another user's dir = %v, want a refusal naming uid 65534", err)
	}
}
