package sshkey_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/sshkey"
)

func TestEnsureCreatesOnceAndReuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	line, err := sshkey.Ensure(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "ssh-ed25519 ") {
		t.Fatalf("public key %q is not ed25519", line)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi, err)
	}
	again, err := sshkey.Ensure(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(again)[1] != strings.Fields(line)[1] {
		t.Fatal("second Ensure made a new key")
	}
	// OpenSSH itself can read the key, when it is installed.
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-y", "-f", path).Output()
		if err != nil {
			t.Fatalf("ssh-keygen -y: %v", err)
		}
		if strings.Fields(string(out))[1] != strings.Fields(line)[1] {
			t.Fatal("ssh-keygen derives another public key")
		}
	}
}

func TestEnsureRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sshkey.Ensure(path); err == nil || !strings.Contains(err.Error(), "ssh_key_path") {
		t.Fatalf("Ensure on garbage = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a key" {
		t.Fatal("the user's file was changed")
	}
}

func TestWriteKnownHosts(t *testing.T) {
	dir := t.TempDir()
	line, err := sshkey.Ensure(filepath.Join(dir, "hostkey"))
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := sshkey.WriteKnownHosts(kh, []string{"127.0.0.1:2222"}, []string{line, ""}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(kh)
	if !strings.HasPrefix(string(data), "[127.0.0.1]:2222 ssh-ed25519 ") {
		t.Fatalf("known_hosts = %q", data)
	}
	pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(line))
	if !strings.Contains(string(data), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))[12:]) {
		t.Fatal("known_hosts lacks the key")
	}
	if err := sshkey.WriteKnownHosts(kh, []string{"x"}, []string{"junk"}); err == nil {
		t.Fatal("junk host key accepted")
	}
	if err := sshkey.WriteKnownHosts(kh, []string{"x"}, nil); err == nil {
		t.Fatal("no host keys accepted")
	}
}
