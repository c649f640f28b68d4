package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// commandTimeout bounds every program doctor runs (`--version` and the like).
const commandTimeout = 5 * time.Second

// sbinDirs hold administrator tools that an unprivileged user's PATH often
// lacks; root (and so the daemon when it runs as root) has them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// path maps an absolute host path into h.Root.
func (h Host) path(p string) string {
	if h.Root == "" || h.Root == "/" {
		return p
	}
	return filepath.Join(h.Root, p)
}

func (h Host) exists(p string) bool {
	_, err := os.Stat(h.path(p))
	return err == nil
}

// lookPath finds an executable regular file called name in h.Path.
func (h Host) lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(h.Path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH", name)
}

// lookAdmin finds an administrator tool on PATH, then in the sbin dirs
// (inside h.Root).
func (h Host) lookAdmin(name string) (string, error) {
	if p, err := h.lookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		p := h.path(filepath.Join(dir, name))
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH or in %s", name, strings.Join(sbinDirs, ", "))
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// runOutput runs bin with args, bounded by commandTimeout, and returns its
// standard output.
func runOutput(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return "", fmt.Errorf("`%s %s` did not finish within %s", bin, strings.Join(args, " "), commandTimeout)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(bytes.TrimSpace(ee.Stderr)) > 0 {
			return "", fmt.Errorf("`%s %s` failed: %v: %s", bin, strings.Join(args, " "), err, firstOf(string(ee.Stderr)))
		}
		return "", fmt.Errorf("`%s %s` failed: %v", bin, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// firstLine runs bin with args (bounded by commandTimeout) and returns the
// first non-empty line of its output.
func firstLine(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := runOutput(ctx, bin, args...)
	if err != nil {
		return "", err
	}
	return firstOf(out), nil
}

func firstOf(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}
