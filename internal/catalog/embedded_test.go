package catalog

import (
	"strings"
	"testing"
)

func TestLoadImagesShipsDebianBookworm(t *testing.T) {
	c, err := LoadImages()
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind() != Images {
		t.Errorf("LoadImages gave a catalog of kind %q", c.Kind())
	}
	e, ok := c.Lookup("debian-bookworm")
	if !ok {
		t.Fatal("debian-bookworm is not in the image catalog")
	}
	if e.Kernel != "debian-6.1-amd64" {
		t.Errorf("debian-bookworm boots %q, want debian-6.1-amd64", e.Kernel)
	}
	if e.Bundle != nil {
		t.Errorf("debian-bookworm names a bundle (%+v), but none is published yet", e.Bundle)
	}
	if e.Build == nil || e.Build.Kind != "debootstrap" || e.Build.Params["suite"] != "bookworm" {
		t.Fatalf("debian-bookworm build recipe = %+v, want debootstrap of bookworm", e.Build)
	}
	for _, pkg := range []string{"openssh-server", "systemd-sysv"} {
		if !strings.Contains(e.Build.Params["packages"], pkg) {
			t.Errorf("debian-bookworm package list lacks %s", pkg)
		}
	}
}

func TestLoadKernelsShipsDebianKernel(t *testing.T) {
	c, err := LoadKernels()
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind() != Kernels {
		t.Errorf("LoadKernels gave a catalog of kind %q", c.Kind())
	}
	e, ok := c.Lookup("debian-6.1-amd64")
	if !ok {
		t.Fatal("debian-6.1-amd64 is not in the kernel catalog")
	}
	if e.Bundle != nil {
		t.Errorf("debian-6.1-amd64 names a bundle (%+v), but none is published yet", e.Bundle)
	}
	if e.Build == nil || e.Build.Kind != "apt-kernel" || e.Build.Params["package"] != "linux-image-amd64" {
		t.Errorf("debian-6.1-amd64 build recipe = %+v, want apt-kernel of linux-image-amd64", e.Build)
	}
}

// Loading twice gives the same parsed catalog, not a second parse.
func TestLoadIsOnce(t *testing.T) {
	a, _ := LoadImages()
	b, _ := LoadImages()
	k1, _ := LoadKernels()
	k2, _ := LoadKernels()
	if a != b || k1 != k2 || a == nil || k1 == nil {
		t.Errorf("LoadImages/LoadKernels parsed again: %p %p, %p %p", a, b, k1, k2)
	}
}

// Every image must boot a kernel the kernel catalog has.
func TestImageKernelsExist(t *testing.T) {
	images, err := LoadImages()
	if err != nil {
		t.Fatal(err)
	}
	kernels, err := LoadKernels()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range images.Entries() {
		k, ok := kernels.Lookup(e.Kernel)
		if !ok {
			t.Errorf("image %s names kernel %q, which the kernel catalog lacks", e.Name, e.Kernel)
			continue
		}
		if k.Arch != e.Arch && !(isAMD64(k.Arch) && isAMD64(e.Arch)) {
			t.Errorf("image %s (%s) names kernel %s of another arch (%s)", e.Name, e.Arch, k.Name, k.Arch)
		}
	}
}

func isAMD64(a string) bool { return a == "x86_64" || a == "amd64" }

// No catalog may name a real host: nothing is published yet, so every
// bundle URL must be relative (resolved against catalog_base_url).
func TestNoHostNamesInEmbeddedCatalogs(t *testing.T) {
	for name, doc := range map[string][]byte{"images.json": imagesJSON, "kernels.json": kernelsJSON} {
		for _, bad := range []string{"http://", "https://"} {
			if strings.Contains(string(doc), bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
