package release

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// PublicKeyPEM is the public half of the key that signs banger releases.
// scripts/install.sh carries the same bytes; a test and the publish script
// refuse any drift between the two.
const PublicKeyPEM = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGDUK4H8kOPttaF6y3teEzBtO0Z/P
An6SE/hIXeTh0cOihHo9DYxJJwIGUS+eZQgy5PMHtEv0V9qCBO2WrT7udQ==
-----END PUBLIC KEY-----
`

// keyOverride, when a build sets it (-ldflags "-X
// banger/internal/release.keyOverride=<base64 of a PKIX DER key>"), replaces
// the pinned key. Only tests build that way; `banger update` says so when it
// is set.
var keyOverride string

// brokenOverride is the PEM type PinnedKey returns when keyOverride does not
// decode: VerifySignature refuses it, saying why, so a bad build fails on
// its first check instead of panicking or falling back to another key.
const brokenOverride = "BANGER BROKEN KEY OVERRIDE"

// ErrSignature is wrapped by every error of VerifySignature about the
// signature itself (not base64, empty, oversized, or not made by the key),
// as opposed to an unusable key.
var ErrSignature = errors.New("the signature over SHA256SUMS does not match banger's release key")

// maxSigBase64 bounds a signature file's text: the DER of a P-256
// signature is at most 72 bytes, 96 in base64; the rest is slack for
// whitespace.
const maxSigBase64 = 512

// maxSigDER is the longest ASN.1 DER ECDSA P-256 signature.
const maxSigDER = 72

// PinnedKey returns the PEM public key releases are checked against:
// PublicKeyPEM, or the key of keyOverride when the build sets it. An
// override that does not decode to a P-256 key yields a PEM block that
// VerifySignature refuses, saying the build's key override is broken.
func PinnedKey() []byte {
	if keyOverride == "" {
		return []byte(PublicKeyPEM)
	}
	return overrideKey(keyOverride)
}

// overrideKey turns the base64 of a PKIX DER key into its PEM.
func overrideKey(b64 string) []byte {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err == nil {
		_, err = parseP256(der)
	}
	if err != nil {
		return pem.EncodeToMemory(&pem.Block{
			Type:    brokenOverride,
			Headers: map[string]string{"Error": err.Error()},
		})
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// KeyOverridden reports whether this build trusts a key other than
// PublicKeyPEM.
func KeyOverridden() bool { return keyOverride != "" }

// VerifySignature checks sigBase64 (base64 of an ASN.1 DER ECDSA P-256
// signature, as `cosign sign-blob` and `openssl dgst -sha256 -sign | base64`
// write it; surrounding whitespace is ignored) over SHA-256 of payload
// against the PEM public key pubKeyPEM (one PUBLIC KEY block, PKIX, P-256).
// Errors about the signature wrap ErrSignature.
func VerifySignature(pubKeyPEM, payload, sigBase64 []byte) error {
	key, err := parseKeyPEM(pubKeyPEM)
	if err != nil {
		return err
	}
	sig, err := decodeSig(sigBase64)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(key, digest[:], sig) {
		return fmt.Errorf("%w: it was made by another key or over other bytes; the release may have been tampered with, or this banger trusts another key (nothing was installed)", ErrSignature)
	}
	return nil
}

// parseKeyPEM reads exactly one PEM PUBLIC KEY block holding a P-256 key.
func parseKeyPEM(data []byte) (*ecdsa.PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("the release public key is not PEM (want one PEM block of type PUBLIC KEY)")
	}
	if block.Type == brokenOverride {
		return nil, fmt.Errorf("this build's key override (-X banger/internal/release.keyOverride) is broken: %s; rebuild with the base64 of a PKIX DER P-256 public key", block.Headers["Error"])
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("the release public key has bytes after its PEM block; want exactly one PUBLIC KEY block")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("the release public key is a PEM %q block, not PUBLIC KEY", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("the release public key's PEM block has headers; want a plain PUBLIC KEY block")
	}
	return parseP256(block.Bytes)
}

// parseP256 parses a PKIX DER public key and insists on ECDSA P-256.
func parseP256(der []byte) (*ecdsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("the release public key does not parse as PKIX: %w", err)
	}
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the release public key is a %T, not an ECDSA P-256 key", pub)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("the release public key is on curve %s, not P-256", key.Curve.Params().Name)
	}
	return key, nil
}

// decodeSig decodes the base64 text of a signature file.
func decodeSig(sigBase64 []byte) ([]byte, error) {
	if len(sigBase64) > maxSigBase64 {
		return nil, fmt.Errorf("%w: the signature file holds %d bytes, more than the %d a P-256 signature needs; refusing", ErrSignature, len(sigBase64), maxSigBase64)
	}
	text := bytes.TrimSpace(sigBase64)
	if len(text) == 0 {
		return nil, fmt.Errorf("%w: the signature file is empty", ErrSignature)
	}
	sig := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(sig, text)
	if err != nil {
		return nil, fmt.Errorf("%w: the signature is not base64 (%v)", ErrSignature, err)
	}
	if n > maxSigDER {
		return nil, fmt.Errorf("%w: the signature decodes to %d bytes, more than the %d of a P-256 signature", ErrSignature, n, maxSigDER)
	}
	return sig[:n], nil
}
