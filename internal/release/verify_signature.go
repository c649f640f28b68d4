package release

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

// PinnedKey returns the PEM public key releases are checked against.
func PinnedKey() []byte { panic("skeleton") }

// KeyOverridden reports whether this build trusts a key other than
// PublicKeyPEM.
func KeyOverridden() bool { return keyOverride != "" }

// VerifySignature checks sigBase64 (base64 of an ASN.1 DER ECDSA P-256
// signature, as `cosign sign-blob` and `openssl dgst -sha256 -sign | base64`
// write it) over SHA-256 of payload against the PEM public key pubKeyPEM.
func VerifySignature(pubKeyPEM, payload, sigBase64 []byte) error { panic("skeleton") }
