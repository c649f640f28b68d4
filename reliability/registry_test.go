//go:build reliability

package reliability

import (
	"crypto/rand"
	"os/exec"
	"testing"

	"banger/internal/testutil/ociregistry"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// entry is one tar entry of a test layer.
type entry = ociregistry.Entry

// push writes a one-layer image of the entries to reg as repoTag and
// returns its reference.
func push(t *testing.T, reg *ociregistry.Registry, repoTag string, entries []entry) string {
	t.Helper()
	return reg.Push(t, repoTag, ociregistry.Layer(t, entries...), v1.Config{Cmd: []string{"/bin/sh"}})
}

// bigLayerFiles is a small root tree with 48 MiB of incompressible data,
// so that a pull spends long enough in each phase to be caught there.
func bigLayerFiles(t *testing.T) []entry {
	blob := make([]byte, 48<<20)
	rand.Read(blob)
	return []entry{
		ociregistry.Dir("bin/"), ociregistry.Dir("etc/"), ociregistry.Dir("data/"),
		ociregistry.File("bin/sh", []byte("#!/bin/sh\n")),
		ociregistry.File("etc/hostname", []byte("oci\n")),
		ociregistry.File("data/blob", blob),
	}
}

func mkfs(t *testing.T, tree, img, size string) {
	t.Helper()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}
