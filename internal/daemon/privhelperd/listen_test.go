package privhelperd_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privhelperd"
)

// TestDMPrefixIsDmsnaps: the protocol names dmsnap's prefix without linking
// dmsnap; the two must be one name.
func TestDMPrefixIsDmsnaps(t *testing.T) {
	if privhelper.DMPrefix != dmsnap.Prefix {
		t.Fatalf("privhelper.DMPrefix is %q, dmsnap.Prefix %q: make them one", privhelper.DMPrefix, dmsnap.Prefix)
	}
}

func TestListenRefusesASecondHelper(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	if _, err := privhelperd.Listen(f.sock); err == nil || !strings.Contains(err.Error(), "another banger helper already listens on "+f.sock) {
		t.Fatalf("second Listen: %v", err)
	}
	if _, err := f.client().Hello(bounded(t)); err != nil {
		t.Fatalf("the first helper stopped answering: %v", err)
	}
	fi, err := os.Stat(f.sock)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v, %v; want 0666 (callers are checked by SO_PEERCRED)", fi.Mode(), err)
	}
}

// TestListenShowsTheSocketOnlyReady: the socket appears under its name
// already 0666 (it is bound under another name first), nothing else is left
// in its directory, and Close removes it.
func TestListenShowsTheSocketOnlyReady(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "helper.sock")
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	ln, err := privhelperd.Listen(sock)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o666 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v, %v; want a 0666 socket", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket", len(ents))
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the socket by its name: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
	// A late second Close of the old listener leaves a new helper's socket
	// on the same path alone.
	ln2, err := privhelperd.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the old listener's second Close removed the new socket: %v", err)
	}
}
