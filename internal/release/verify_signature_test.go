package release

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPublicKeyPEMIsP256(t *testing.T) {
	block, rest := pem.Decode([]byte(PublicKeyPEM))
	if block == nil || len(rest) != 0 || block.Type != "PUBLIC KEY" {
		t.Fatalf("PublicKeyPEM is not exactly one PUBLIC KEY block (rest %q)", rest)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		t.Fatalf("PublicKeyPEM is a %T, want an ECDSA P-256 key", pub)
	}
	if strings.Contains(PublicKeyPEM, "\r") || !strings.HasSuffix(PublicKeyPEM, "-----END PUBLIC KEY-----\n") {
		t.Fatal("PublicKeyPEM must have LF line ends and end with its END line and a newline")
	}
	if _, err := parseKeyPEM([]byte(PublicKeyPEM)); err != nil {
		t.Fatal(err)
	}
	if keyOverride == "" && (!bytes.Equal(PinnedKey(), []byte(PublicKeyPEM)) || KeyOverridden()) {
		t.Fatal("without an override PinnedKey must be PublicKeyPEM")
	}
}

// An openssl-made key and signature verify, as the publish script makes
// them; a signature of ours verifies with openssl as install.sh checks it.
func TestVerifyOpenSSLSignature(t *testing.T) {
	key, pub := opensslKey(t, "P-256")
	payload := []byte("0123  banger_v0.0.1_linux_amd64.tar.gz\n")
	sig := opensslSign(t, key, payload)
	for _, s := range [][]byte{sig, append(sig, '\n'), append(append([]byte("  "), sig...), "\r\n"...)} {
		if err := VerifySignature(pub, payload, s); err != nil {
			t.Fatalf("openssl signature %q: %v", s, err)
		}
	}
	// The other way: openssl checks what the Go side verifies.
	dir := t.TempDir()
	der, _ := base64.StdEncoding.DecodeString(string(sig))
	for name, b := range map[string][]byte{"pub.pem": pub, "payload": payload, "sig": der} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"),
		"-signature", filepath.Join(dir, "sig"), filepath.Join(dir, "payload")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// A flipped byte of the payload.
	bad := bytes.Clone(payload)
	bad[0] ^= 1
	if err := VerifySignature(pub, bad, sig); !errors.Is(err, ErrSignature) {
		t.Fatalf("flipped payload: %v, want ErrSignature", err)
	}
	// A signature by another openssl key.
	other, _ := opensslKey(t, "P-256")
	if err := VerifySignature(pub, payload, opensslSign(t, other, payload)); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "does not match banger's release key") {
		t.Fatalf("other key: %v", err)
	}
}

func TestVerifyRefusesOtherKeyTypes(t *testing.T) {
	payload := []byte("x")
	for _, algo := range []string{"P-384", "RSA"} {
		key, pub := opensslKey(t, algo)
		sig := opensslSign(t, key, payload)
		err := VerifySignature(pub, payload, sig)
		if err == nil || errors.Is(err, ErrSignature) {
			t.Fatalf("%s key: %v, want a key error", algo, err)
		}
		t.Logf("%s: %v", algo, err)
	}
	p384 := newTestKey(t, elliptic.P384())
	if err := VerifySignature(p384.pubPEM, payload, p384.sign(t, payload)); err == nil || !strings.Contains(err.Error(), "P-384") {
		t.Fatalf("P-384: %v", err)
	}
}

func TestVerifySignatureRefusals(t *testing.T) {
	k := newTestKey(t, elliptic.P256())
	payload := []byte("SHA256SUMS contents\n")
	sig := k.sign(t, payload)
	if err := VerifySignature(k.pubPEM, payload, sig); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	der, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	trunc := []byte(base64.StdEncoding.EncodeToString(der[:len(der)-3]))
	sigErrs := map[string][]byte{
		"empty":       nil,
		"blank":       []byte(" \n\t\n"),
		"not base64":  []byte("not*base64!\n"),
		"truncated":   trunc,
		"half base64": sig[:len(sig)/2],
		"oversized":   bytes.Repeat([]byte("A"), 4096),
		"long DER":    []byte(base64.StdEncoding.EncodeToString(make([]byte, 100))),
		"other key":   newTestKey(t, elliptic.P256()).sign(t, payload),
		"other bytes": k.sign(t, []byte("other")),
	}
	for name, s := range sigErrs {
		err := VerifySignature(k.pubPEM, payload, s)
		if !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
	keyErrs := map[string][]byte{
		"not PEM":        []byte("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
		"trailing bytes": append(bytes.Clone(k.pubPEM), "garbage"...),
		"two blocks":     append(bytes.Clone(k.pubPEM), k.pubPEM...),
		"private type":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k.der}),
		"headers":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"A": "b"}, Bytes: k.der}),
		"bad DER":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.der[:20]}),
		"empty":          nil,
	}
	for name, key := range keyErrs {
		err := VerifySignature(key, payload, sig)
		if err == nil || errors.Is(err, ErrSignature) {
			t.Errorf("key %s: %v, want a key error", name, err)
		}
	}
	// Trailing whitespace after the PEM block is fine.
	if err := VerifySignature(append(bytes.Clone(k.pubPEM), "\n\n"...), payload, sig); err != nil {
		t.Errorf("key with trailing newlines: %v", err)
	}
}

func TestKeyOverride(t *testing.T) {
	saved := keyOverride
	t.Cleanup(func() { keyOverride = saved })
	k := newTestKey(t, elliptic.P256())
	payload := []byte("payload")
	keyOverride = base64.StdEncoding.EncodeToString(k.der)
	if !KeyOverridden() {
		t.Fatal("KeyOverridden false with an override")
	}
	if !bytes.Equal(PinnedKey(), k.pubPEM) {
		t.Fatalf("PinnedKey = %s, want %s", PinnedKey(), k.pubPEM)
	}
	if err := VerifySignature(PinnedKey(), payload, k.sign(t, payload)); err != nil {
		t.Fatal(err)
	}
	p384 := newTestKey(t, elliptic.P384())
	for _, bad := range []string{"!!not base64", base64.StdEncoding.EncodeToString([]byte("not DER")), base64.StdEncoding.EncodeToString(p384.der)} {
		keyOverride = bad
		err := VerifySignature(PinnedKey(), payload, k.sign(t, payload))
		if err == nil || !strings.Contains(err.Error(), "key override") {
			t.Fatalf("override %q: %v, want one saying the override is broken", bad, err)
		}
	}
}

func FuzzVerifySignature(f *testing.F) {
	k := newTestKey(f, elliptic.P256())
	f.Add([]byte("payload"), k.sign(f, []byte("payload")))
	f.Add([]byte(""), []byte("MEUCIQ==\n"))
	f.Fuzz(func(t *testing.T, payload, sig []byte) {
		_ = VerifySignature(k.pubPEM, payload, sig)
		_ = VerifySignature(sig, payload, sig)
	})
}
