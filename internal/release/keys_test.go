package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// testKey is a throwaway P-256 key made in memory; nothing is written.
type testKey struct {
	priv   *ecdsa.PrivateKey
	pubPEM []byte
	der    []byte // PKIX DER of the public half
}

func newTestKey(t testing.TB, curve elliptic.Curve) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: priv, der: der, pubPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

// sign returns what a signature file holds: base64 of the DER signature
// over SHA-256 of payload, with a trailing newline.
func (k testKey) sign(t testing.TB, payload []byte) []byte {
	t.Helper()
	d := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n")
}

// needOpenSSL skips unless the openssl CLI is installed.
func needOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skipf("needs the openssl CLI to make and check keys as the publish script and install.sh do: %v", err)
	}
	return p
}

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr)
	}
	return out
}

// opensslKey makes a throwaway key with the openssl CLI in a temporary
// directory: algo "P-256", "P-384" or "RSA". It returns the private key's
// path and the PEM of its public half.
func opensslKey(t testing.TB, algo string) (string, []byte) {
	t.Helper()
	ossl := needOpenSSL(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	switch algo {
	case "P-256":
		run(t, ossl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
	case "P-384":
		run(t, ossl, "ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", key)
	case "RSA":
		run(t, ossl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
	default:
		t.Fatalf("unknown algo %s", algo)
	}
	pub := run(t, ossl, "pkey", "-in", key, "-pubout")
	return key, pub
}

// opensslSign signs payload with key as the contract says the publish
// script does: openssl dgst -sha256 -sign key | base64 -w0.
func opensslSign(t testing.TB, key string, payload []byte) []byte {
	t.Helper()
	ossl := needOpenSSL(t)
	f := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(f, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	der := run(t, ossl, "dgst", "-sha256", "-sign", key, f)
	return []byte(base64.StdEncoding.EncodeToString(der))
}
