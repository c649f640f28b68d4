package release

// Sums is a parsed SHA256SUMS: file name to SHA-256 digest.
type Sums map[string][32]byte

// MaxSumsSize bounds a SHA256SUMS file (and its signature) on download.
const MaxSumsSize = 64 << 10

// ParseSums reads the `sha256sum` format ("<64 hex>  <name>" or
// "<64 hex> *<name>", one per line). Names must be plain file names (no
// '/', no "..", no control characters), each listed once.
func ParseSums(data []byte) (Sums, error) { panic("skeleton") }

// Check returns an error unless name is listed with digest.
func (s Sums) Check(name string, digest [32]byte) error { panic("skeleton") }
