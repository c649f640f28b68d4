package kernelcat

import (
	"strings"
	"testing"
)

func TestLoadShipsDebianKernel(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
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
	if len(c.Entries()) == 0 {
		t.Error("Entries is empty")
	}
}

// Nothing is published yet, so the catalog must name no host.
func TestNoHostNamesInCatalog(t *testing.T) {
	for _, bad := range []string{"http://", "https://"} {
		if strings.Contains(string(catalogJSON), bad) {
			t.Errorf("kernel catalog contains %q", bad)
		}
	}
}
