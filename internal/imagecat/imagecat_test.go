package imagecat

import (
	"strings"
	"testing"

	"banger/internal/kernelcat"
)

func TestLoadShipsDebianBookworm(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
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

// Every image must boot a kernel the kernel catalog has.
func TestImageKernelsExist(t *testing.T) {
	images, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	kernels, err := kernelcat.Load()
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
func TestNoHostNamesInCatalogs(t *testing.T) {
	for _, bad := range []string{"http://", "https://"} {
		if strings.Contains(string(catalogJSON), bad) {
			t.Errorf("image catalog contains %q", bad)
		}
	}
}

func TestResolveURLDelegates(t *testing.T) {
	got, err := ResolveURL("file:///srv/cat", Bundle{URL: "images/x.tar.zst"})
	if err != nil || got != "file:///srv/cat/images/x.tar.zst" {
		t.Errorf("ResolveURL = %q, %v", got, err)
	}
	if _, err := ResolveURL("", Bundle{URL: "images/x.tar.zst"}); err == nil {
		t.Error("relative URL with no base resolved")
	}
}
