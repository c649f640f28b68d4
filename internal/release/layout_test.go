package release

import (
	"strings"
	"testing"
)

func TestArchiveName(t *testing.T) {
	v, err := ParseVersion("v0.3.1")
	if err != nil {
		t.Fatal(err)
	}
	if got := ArchiveName(v, "amd64"); got != "banger_v0.3.1_linux_amd64.tar.gz" {
		t.Fatalf("ArchiveName = %q", got)
	}
	rc, _ := ParseVersion("v1.0.0-rc.1")
	if got := ArchiveName(rc, "arm64"); got != "banger_v1.0.0-rc.1_linux_arm64.tar.gz" || checkFileName(got) != nil {
		t.Fatalf("ArchiveName = %q", got)
	}
	for _, a := range Arches {
		if err := CheckArch(a); err != nil {
			t.Error(err)
		}
	}
	for _, a := range []string{"x86_64", "aarch64", "386", "", "amd64/../x"} {
		if err := CheckArch(a); err == nil || !strings.Contains(err.Error(), "amd64 and arm64") {
			t.Errorf("CheckArch(%q) = %v", a, err)
		}
	}
}

// The lists of the layout agree with each other.
func TestLayoutLists(t *testing.T) {
	in := map[string]bool{}
	for _, n := range ArchiveFiles {
		if in[n] || checkFileName(n) != nil {
			t.Fatalf("ArchiveFiles: %q twice or not a plain name", n)
		}
		in[n] = true
	}
	for _, n := range append(append([]string{}, Binaries...), Units...) {
		if !in[n] {
			t.Errorf("%s is not in ArchiveFiles", n)
		}
	}
}
