// Package debkernel gives tests Debian's real kernel package: it finds the
// linux-image package behind linux-image-amd64 with the host's apt, downloads
// it once with `apt-get download`, and caches it in $BANGER_TEST_CACHE
// (default ~/.cache/banger-test). Tests that cannot have it skip with the
// reason it returns.
package debkernel

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// CacheDir is where downloaded test artefacts are kept.
func CacheDir() (string, error) {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".cache", "banger-test"), nil
}

var once = sync.OnceValues(fetch)

// Deb returns the path of the cached linux-image .deb, or a reason why it
// cannot be had here (for t.Skip).
func Deb() (path, skip string) { return once() }

func fetch() (string, string) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", "apt-get not available; cannot fetch Debian's kernel package"
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Sprintf("apt-cache depends linux-image-amd64 failed (%v); no Debian kernel package known", err)
	}
	var pkg string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		return "", "linux-image-amd64 names no linux-image package"
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err.Error()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Sprintf("cannot create cache dir %s: %v", dir, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*_amd64.deb")); len(m) > 0 {
		return m[len(m)-1], ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("apt-get download %s failed: %v: %s", pkg, err, strings.TrimSpace(string(out)))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*_amd64.deb")); len(m) > 0 {
		return m[len(m)-1], ""
	}
	return "", "apt-get download " + pkg + " left no .deb in " + dir
}
