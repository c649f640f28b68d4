package boot

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"banger/internal/guest/proto"

	"golang.org/x/crypto/ssh"
)

// hostKeyTypes are the host key types a resume makes again: ed25519
// always, ecdsa when the image has one. RSA and DSA keys are removed
// instead (see renewHostKeys).
var hostKeyTypes = []struct {
	name   string
	always bool
	gen    func() (crypto.Signer, error)
}{
	{"ed25519", true, func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
	{"ecdsa", false, func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}},
}

// removedHostKeyTypes are removed, not made again: an RSA key takes
// seconds to make under software emulation, and a clone must not keep its
// parent's. sshd serves the others; an image whose sshd unit runs
// "ssh-keygen -A" before it starts (the golden image does) makes a fresh
// RSA key at the next start of sshd.
var removedHostKeyTypes = []string{"rsa", "dsa"}

// renewHostKeys replaces the SSH host keys in env.SSHDir with new ones and
// records req.ID, or, when the request repeats the resume applied last,
// keeps them. It returns the public keys as they now are.
func renewHostKeys(req proto.ResumedRequest, env *ResumeEnv, repeat bool) ([]string, Status, string, error) {
	if repeat {
		keys, err := readHostKeys(env.SSHDir)
		if err == nil && len(keys) > 0 {
			return keys, StatusUnchanged, "repeated resume: keeping the keys it made", nil
		}
	}
	if err := os.MkdirAll(env.SSHDir, 0o755); err != nil {
		return nil, StatusFailed, "", fmt.Errorf("create %s: %w", env.SSHDir, err)
	}
	comment := "root@" + req.Hostname
	if req.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			comment = "root@" + h
		}
	}
	var keys, made, removed []string
	var errs []error
	for _, kt := range hostKeyTypes {
		priv := filepath.Join(env.SSHDir, "ssh_host_"+kt.name+"_key")
		if _, err := os.Lstat(priv); err != nil && !kt.always {
			continue
		}
		line, err := writeHostKey(priv, kt.gen, comment)
		if err != nil {
			errs = append(errs, fmt.Errorf("make a new %s host key: %w", kt.name, err))
			continue
		}
		keys = append(keys, line)
		made = append(made, kt.name)
	}
	for _, name := range removedHostKeyTypes {
		priv := filepath.Join(env.SSHDir, "ssh_host_"+name+"_key")
		for _, p := range []string{priv, priv + ".pub"} {
			err := os.Remove(p)
			if err == nil {
				removed = append(removed, filepath.Base(p))
			} else if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove the parent's %s: %w", p, err))
			}
		}
	}
	if len(errs) == 0 {
		if err := writeResumeID(env.StateFile, req.ID); err != nil {
			errs = append(errs, err)
		}
	}
	detail := "made " + strings.Join(made, ", ") + " in " + env.SSHDir
	if len(removed) > 0 {
		detail += "; removed " + strings.Join(removed, ", ")
	}
	slices.Sort(keys)
	if len(made) == 0 {
		return keys, StatusFailed, "", errors.Join(errs...)
	}
	return keys, StatusDone, detail, errors.Join(errs...)
}

// writeHostKey makes a key with gen and replaces the pair at priv and
// priv.pub, each file whole (the private key first: sshd reads only it).
// It returns the public key's authorized_keys line.
func writeHostKey(priv string, gen func() (crypto.Signer, error), comment string) (string, error) {
	k, err := gen()
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(k, comment)
	if err != nil {
		return "", fmt.Errorf("encode the private key: %w", err)
	}
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		return "", fmt.Errorf("encode the public key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " " + comment
	if _, err := writeFileAtomic(priv, pem.EncodeToMemory(block), 0o600, -1, -1); err != nil {
		return "", err
	}
	if _, err := writeFileAtomic(priv+".pub", []byte(line+"\n"), 0o644, -1, -1); err != nil {
		return "", err
	}
	return line, nil
}

// readHostKeys returns the lines of dir's ssh_host_*_key.pub files.
func readHostKeys(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "ssh_host_*_key.pub"))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if line := strings.TrimSpace(string(data)); line != "" {
			keys = append(keys, line)
		}
	}
	slices.Sort(keys)
	return keys, nil
}
