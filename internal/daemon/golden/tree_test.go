package golden_test

import (
	"os"
	"path/filepath"
	"testing"

	"banger/internal/daemon/golden"
)

// TestCustomizeStaysInTheTree: a tree whose directories are links out of
// it (etc, usr/local, etc/ssh, a .wants directory: whatever the image's
// packages put there) must not lead a write, a removal or a read of
// Customize out of it. Each link leads to a host directory of its own,
// which must stay as it was.
func TestCustomizeStaysInTheTree(t *testing.T) {
	for _, link := range []string{"etc", "usr/local", "usr/local/bin", "etc/ssh", "etc/systemd", "etc/systemd/system/multi-user.target.wants", "etc/shadow"} {
		t.Run(link, func(t *testing.T) {
			tree := t.TempDir()
			host := t.TempDir()
			agent := filepath.Join(t.TempDir(), "agent")
			write(t, agent, "#!agent")
			// What the host directory holds: a shadow (read through an
			// etc link, then rewritten), host keys (removed through an
			// etc/ssh link), a file of each name Customize writes.
			for _, f := range []string{"shadow", "ssh_host_rsa_key", "hostname", "ssh/ssh_host_rsa_key", "banger-vsock-agent"} {
				write(t, filepath.Join(host, f), "root:host-secret:1:0:::::\n")
			}
			write(t, filepath.Join(tree, "etc/shadow"), "root:x:1:0:::::\n")
			full := filepath.Join(tree, link)
			if err := os.RemoveAll(full); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			target := host
			if link == "etc/shadow" {
				target = filepath.Join(host, "shadow")
			}
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, host)
			_ = golden.Customize(tree, agent, "vm")
			if after := snapshot(t, host); !equal(before, after) {
				t.Fatalf("Customize changed the host directory a link of the tree leads to:\nbefore %v\nafter  %v", before, after)
			}
			if b, err := os.ReadFile(filepath.Join(tree, "etc/shadow")); err == nil && string(b) == "root:*:1:0:::::\n" && link == "etc/shadow" {
				t.Fatal("the host's shadow was read through the tree's link")
			}
		})
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, _ := os.ReadFile(p)
		m[p] = fi.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
