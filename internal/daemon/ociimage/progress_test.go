package ociimage

import (
	"context"
	"path/filepath"
	"testing"

	"banger/internal/progress"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// unitRecorder remembers every unit an import reports in.
type unitRecorder struct{ units []progress.Unit }

func (r *unitRecorder) Phase(string)                         {}
func (r *unitRecorder) SetTotal(_ int64, unit progress.Unit) { r.units = append(r.units, unit) }
func (r *unitRecorder) Add(int64)                            {}

// An import reported its download in "B", which the store refuses: every
// write of the operation failed from then on, its terminal state included.
// Every unit an import reports must be one the store accepts.
func TestImportReportsOnlyUnitsTheStoreAccepts(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	img := buildImage(t, "amd64", v1.Config{},
		layerOf(t, mkTar(t, dir("etc/", 0o755, 0, 0), file("etc/a", "a\n", 0o644, 0, 0)), compression.GZip),
		layerOf(t, mkTar(t, file("etc/b", "b\n", 0o644, 0, 0)), compression.ZStd))
	ref := reg.push(t, "units/app:1", img)
	rec := &unitRecorder{}
	if _, err := Import(context.Background(), ref, filepath.Join(t.TempDir(), "rootfs.ext4"), Options{Insecure: true}, rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.units) == 0 {
		t.Fatal("the import reported no total")
	}
	for _, u := range rec.units {
		if !u.Valid() {
			t.Errorf("progress unit %q is not one the store accepts", u)
		}
	}
}
