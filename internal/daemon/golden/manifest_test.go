package golden

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/catalog"
)

// TestManifestNamesTheGuestPieces: the manifest of a build says which
// version of the guest pieces it holds, so an image built before a change
// of the boot path can be told apart from one built after.
func TestManifestNamesTheGuestPieces(t *testing.T) {
	dir := t.TempDir()
	if err := writeManifest(dir, catalog.Entry{Name: "debian-bookworm", Kernel: "k"}, "debootstrap", "bookworm"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Name        string `json:"name"`
		GuestPieces int    `json:"guest_pieces"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest.json is not JSON: %v: %s", err, b)
	}
	if m.Name != "debian-bookworm" || m.GuestPieces != GuestPiecesVersion || GuestPiecesVersion < 2 {
		t.Fatalf("manifest = %+v (GuestPiecesVersion %d); want guest_pieces = GuestPiecesVersion >= 2", m, GuestPiecesVersion)
	}
}
