//go:build reliability

package reliability

import (
	"archive/tar"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil/ociregistry"
)

// TestHostileRegisteredFiles registers files that are not disk images as
// an image's root filesystem: every one must be refused before it is
// recorded, and nothing may hang on a file that never ends.
func TestHostileRegisteredFiles(t *testing.T) {
	e := start(t)
	dir := t.TempDir()
	random := filepath.Join(dir, "random.img")
	writeRandom(t, random, 1<<20)
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o600)
	link := filepath.Join(dir, "zero-link")
	os.Symlink("/dev/zero", link)
	cases := []struct{ fault, path string }{
		{"the host's /etc/shadow", "/etc/shadow"},
		{"/proc/self/environ", "/proc/self/environ"},
		{"1 MiB of random bytes", random},
		{"a fifo", fifo},
		{"a directory", dir},
		{"a symlink to /dev/zero", link},
		{"/dev/zero", "/dev/zero"},
	}
	for i, c := range cases {
		name := fmt.Sprintf("hostile-%d", i)
		out, code := e.CLI("image", "register", name, "--rootfs", c.path, "--kernel", "k")
		ls, _ := e.CLI("image", "ls")
		survived := code != 0 && !strings.Contains(ls, name)
		if code == 0 {
			out = "accepted: " + out
			e.CLI("image", "rm", name)
		}
		record(t, result{area: "hostile input", fault: "image register --rootfs " + c.fault, survived: survived, saw: out})
	}
	// Without a kernel, register must decide now (the default image's
	// kernel, here "k"), not leave vm create to refuse it later.
	out, code := e.CLI("image", "register", "nokernel", "--rootfs", smallImage)
	if code == 0 {
		insp, _ := e.CLI("image", "inspect", "nokernel")
		e.CLI("image", "rm", "nokernel")
		decided := strings.Contains(insp, "kernel") && strings.Contains(insp, " k\n")
		record(t, result{area: "hostile input", fault: "image register without --kernel", survived: decided,
			saw: "registered with the default image's kernel: " + strings.Join(strings.Fields(grepLine(insp, "kernel")), " ")})
	} else {
		record(t, result{area: "hostile input", fault: "image register without --kernel", survived: true, saw: out})
	}
}

// TestHostileNames gives VM names that a path, a DNS name or a flag
// parser could trip on: each must be refused and change nothing.
func TestHostileNames(t *testing.T) {
	e := start(t)
	names := []string{"../../etc", "a/b", "a..b", ".hidden", strings.Repeat("a", 300), "UPPER", "naïve", "-rf", "with space", "a\nb", "a;reboot"}
	for _, n := range names {
		before, _ := tree(e.State)
		out, code := e.CLI("vm", "create", "img", "--name="+n)
		after, _ := tree(e.State)
		left := newPaths(before, after)
		survived := code != 0 && len(left) == 0
		if code == 0 {
			out = "accepted: " + out
			e.CLI("vm", "rm", "-f", n)
		}
		record(t, result{area: "hostile input", fault: fmt.Sprintf("vm create --name %q", shorten(n)), survived: survived, saw: out})
	}
}

// grepLine is the first line of s that starts with prefix.
func grepLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return l
		}
	}
	return ""
}

func shorten(s string) string {
	if len(s) > 24 {
		return s[:12] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// TestHostileLayers pulls OCI images whose layers try to write outside
// the image: the pull must fail (or neutralise the entry) and nothing may
// appear on the host.
func TestHostileLayers(t *testing.T) {
	e := start(t)
	reg := ociregistry.Start(t)
	var nonce [6]byte
	rand.Read(nonce[:])
	target := fmt.Sprintf("/tmp/banger-rel-pwned-%x", nonce)
	rel := strings.Repeat("../", 12) + strings.TrimPrefix(target, "/")
	base := []entry{ociregistry.Dir("bin/"), ociregistry.File("bin/sh", []byte("#!/bin/sh\n"))}
	cases := []struct {
		fault   string
		entries []entry
	}{
		{"a ../ path to a host file", []entry{ociregistry.File(rel, []byte("pwned"))}},
		{"an absolute path", []entry{ociregistry.File(target, []byte("pwned"))}},
		{"a symlink to / then a file through it", []entry{
			{Hdr: tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/", Mode: 0o777}},
			ociregistry.File("evil"+target, []byte("pwned")),
		}},
		{"a symlink to the parent then a file through it", []entry{
			{Hdr: tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("../", 12), Mode: 0o777}},
			ociregistry.File("up"+target, []byte("pwned")),
		}},
		{"a hardlink to the host's /etc/passwd", []entry{
			{Hdr: tar.Header{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}},
		}},
		{"a hardlink out through ../", []entry{
			{Hdr: tar.Header{Name: "passwd2", Typeflag: tar.TypeLink, Linkname: strings.Repeat("../", 12) + "etc/passwd"}},
		}},
	}
	for i, c := range cases {
		ref := push(t, reg, fmt.Sprintf("rel/hostile%d:1", i), append(append([]entry{}, base...), c.entries...))
		id := startDetached(t, e, []string{"image", "pull", ref, "--insecure", "--name", fmt.Sprintf("hostile%d", i), "--kernel", "k"})
		out, code := e.CLI("op", "wait", id)
		if o := e.op(t, id); o.Error != "" {
			out = o.Error
		}
		_, statErr := os.Lstat(target)
		survived := os.IsNotExist(statErr)
		saw := out
		if code == 0 {
			saw = "pulled, entry neutralised: " + firstLine(out)
			e.CLI("image", "rm", fmt.Sprintf("hostile%d", i))
		}
		lost := ""
		if !survived {
			lost = "a file was written on the host at " + target
			os.Remove(target)
		}
		record(t, result{area: "hostile input", fault: "OCI layer with " + c.fault, survived: survived, saw: saw, lost: lost})
	}
}
