package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAddGuestPiecesStaysInTheImage: an OCI image whose /usr/local is a
// link out of its tree gets no file written through it.
func TestAddGuestPiecesStaysInTheImage(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "usr", "local")); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := addGuestPieces(root, agent)
	ents, _ := os.ReadDir(outside)
	if len(ents) != 0 {
		t.Fatalf("addGuestPieces wrote %d entries outside the image (err %v)", len(ents), err)
	}
	if err == nil {
		t.Fatal("an image whose /usr/local leads out of it was accepted")
	}

	// A link that stays inside the tree is followed.
	inside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(inside, "opt", "local"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(inside, "usr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../opt/local", filepath.Join(inside, "usr", "local")); err != nil {
		t.Fatal(err)
	}
	if err := addGuestPieces(inside, agent); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(inside, "opt", "local", "bin", "banger-vsock-agent")); err != nil {
		t.Fatalf("agent not placed through the inside link: %v", err)
	}
}
