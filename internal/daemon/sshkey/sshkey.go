package sshkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/atomicfile"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Ensure returns the public key (an authorized_keys line) of the key at
// path, creating an ed25519 key pair there (private 0600, public 0644 as
// path.pub) when none exists. An existing key of any type is used as is.
func Ensure(path string) (string, error) {
	if data, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(data)
		if err != nil {
			return "", fmt.Errorf("read SSH key %s: %w (point ssh_key_path at an unencrypted private key, or remove the file to let banger make one)", path, err)
		}
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read SSH key %s: %w", path, err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " banger"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(path+".pub", []byte(line+"\n"), atomicfile.Mode(0o644)); err != nil {
		return "", err
	}
	// The private key last: its presence is what says the pair is complete.
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(block), atomicfile.Mode(0o600)); err != nil {
		return "", err
	}
	return line, nil
}

// WriteKnownHosts records a VM's host public keys (authorized_keys format
// lines) for the given addresses ("host:port" or "host") in path, replacing
// what was there.
func WriteKnownHosts(path string, addresses []string, hostKeys []string) error {
	var b strings.Builder
	for _, line := range hostKeys {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("host key %q: %w", line, err)
		}
		b.WriteString(knownhosts.Line(addresses, key))
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return errors.New("the VM reported no SSH host keys")
	}
	return atomicfile.WriteFile(path, []byte(b.String()), atomicfile.Mode(0o600))
}
