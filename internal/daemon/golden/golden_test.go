package golden_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/catalog"
	"banger/internal/daemon/golden"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostMirror(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "sources.list"), "# nothing here\ndeb [arch=amd64] http://mirror.test/old buster main\n")
	write(t, filepath.Join(dir, "sources.list.d", "a.sources"), `Types: deb
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://mirror.test/src
Suites: bookworm

Types: deb
URIs: http://mirror.test/debian http://other.test/debian
Suites: bookworm bookworm-updates
Components: main
`)
	got, err := golden.HostMirror(dir, "bookworm")
	if err != nil || got != "http://mirror.test/debian" {
		t.Fatalf("HostMirror = %q, %v", got, err)
	}
	got, err = golden.HostMirror(dir, "buster")
	if err != nil || got != "http://mirror.test/old" {
		t.Fatalf("one-line HostMirror = %q, %v", got, err)
	}
	if _, err := golden.HostMirror(dir, "trixie"); err == nil || !strings.Contains(err.Error(), "trixie") {
		t.Fatalf("missing suite = %v", err)
	}
}

func TestCustomize(t *testing.T) {
	tree := t.TempDir()
	agent := filepath.Join(t.TempDir(), "agent")
	write(t, agent, "#!agent")
	write(t, filepath.Join(tree, "etc/shadow"), "root:$6$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
	write(t, filepath.Join(tree, "etc/ssh/ssh_host_ed25519_key"), "build-time key")
	write(t, filepath.Join(tree, "etc/ssh/ssh_host_ed25519_key.pub"), "build-time key")
	if err := golden.Customize(tree, agent, "debian-bookworm"); err != nil {
		t.Fatal(err)
	}
	check := func(rel, want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(tree, rel))
		if err != nil || !strings.Contains(string(b), want) {
			t.Fatalf("%s = %q, %v; want it to contain %q", rel, b, err, want)
		}
	}
	check("usr/local/bin/banger-vsock-agent", "#!agent")
	check("etc/ssh/sshd_config.d/banger.conf", "PasswordAuthentication no")
	check("etc/fstab", "/dev/vda / ext4")
	check("etc/hostname", "debian-bookworm")
	check("etc/shadow", "root:*:19000")
	check("etc/shadow", "daemon:*:19000")
	check("etc/systemd/system/banger-agent.service", "banger-vsock-agent serve")
	check("etc/systemd/system/ssh.service.d/banger-host-keys.conf", "ssh-keygen -q -t ed25519")
	check("etc/ssh/sshd_config.d/banger.conf", "HostKey /etc/ssh/ssh_host_ed25519_key")
	check("etc/tmpfiles.d/tmp.conf", "\nd /tmp 1777 root root -\n")
	if keys, _ := filepath.Glob(filepath.Join(tree, "etc/ssh/ssh_host_*")); len(keys) != 0 {
		t.Fatalf("build-time host keys left: %v", keys)
	}
	for link, target := range map[string]string{
		"etc/systemd/system/sysinit.target.wants/banger-agent.service":      "/etc/systemd/system/banger-agent.service",
		"etc/systemd/system/sysinit.target.wants/banger-agent-boot.service": "/etc/systemd/system/banger-agent-boot.service",
	} {
		got, err := os.Readlink(filepath.Join(tree, link))
		if err != nil || got != target {
			t.Fatalf("%s -> %q, %v", link, got, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(tree, "usr/local/bin/banger-vsock-agent")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("agent mode %v", fi.Mode())
	}
	// Customizing twice is harmless.
	if err := golden.Customize(tree, agent, "debian-bookworm"); err != nil {
		t.Fatal(err)
	}
}

func TestBuildRefusesWhatItCannotDo(t *testing.T) {
	e := catalog.Entry{Name: "x", Build: &catalog.Recipe{Kind: "docker"}}
	if err := golden.Build(context.Background(), e, t.TempDir(), golden.Options{}, nil); err == nil {
		t.Fatal("a non-debootstrap recipe was accepted")
	}
	e.Build = &catalog.Recipe{Kind: "debootstrap", Params: map[string]string{}}
	if err := golden.Build(context.Background(), e, t.TempDir(), golden.Options{}, nil); err == nil || !strings.Contains(err.Error(), "suite") {
		t.Fatalf("no suite = %v", err)
	}
}

// A symlink in the tree at a file Customize writes, or at the fixed
// temporary name older versions wrote through, must be replaced, never
// followed out of the tree.
func TestCustomizeDoesNotWriteThroughSymlinks(t *testing.T) {
	tree := t.TempDir()
	outside := filepath.Join(t.TempDir(), "host-file")
	write(t, outside, "host")
	agent := filepath.Join(t.TempDir(), "agent")
	write(t, agent, "#!agent")
	write(t, filepath.Join(tree, "etc/shadow"), "root:x:1:0:::::\n")
	for _, l := range []string{"etc/hostname", "etc/fstab.banger-tmp"} {
		if err := os.Symlink(outside, filepath.Join(tree, l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := golden.Customize(tree, agent, "vm"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "host" {
		t.Fatalf("Customize wrote through a symlink out of the tree: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(tree, "etc/hostname"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("etc/hostname: %v, %v; want a regular file", fi, err)
	}
}
