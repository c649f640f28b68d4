package release

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Sums is a parsed SHA256SUMS: file name to SHA-256 digest.
type Sums map[string][32]byte

// MaxSumsSize bounds a SHA256SUMS file (and its signature) on download.
const MaxSumsSize = 64 << 10

// maxNameLen bounds a file name in SHA256SUMS (NAME_MAX).
const maxNameLen = 255

// ParseSums reads the `sha256sum` format ("<64 hex>  <name>" or
// "<64 hex> *<name>", one per line). Names must be plain file names (no
// '/', no "..", no control characters), each listed once.
//
// It is strict, as sha256sum writes the file: lower-case hex, LF line
// ends (a CR is refused: the file was changed on the way), a final
// newline optional, no blank lines, no escaped names (a leading '\'),
// names of [A-Za-z0-9._+-] not starting with '.', at most 255 bytes, at
// least one line, at most MaxSumsSize bytes. Lines may come in any order.
func ParseSums(data []byte) (Sums, error) {
	if len(data) > MaxSumsSize {
		return nil, fmt.Errorf("SHA256SUMS is %d bytes, larger than %d; refusing", len(data), MaxSumsSize)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("SHA256SUMS is empty")
	}
	text := strings.TrimSuffix(string(data), "\n")
	sums := Sums{}
	for i, line := range strings.Split(text, "\n") {
		name, digest, err := parseSumsLine(line)
		if err != nil {
			return nil, fmt.Errorf("SHA256SUMS line %d: %s", i+1, err)
		}
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("SHA256SUMS line %d: %s is listed twice", i+1, name)
		}
		sums[name] = digest
	}
	return sums, nil
}

// parseSumsLine reads one line of SHA256SUMS.
func parseSumsLine(line string) (string, [32]byte, error) {
	var digest [32]byte
	switch {
	case line == "":
		return "", digest, fmt.Errorf("blank line")
	case strings.HasSuffix(line, "\r"):
		return "", digest, fmt.Errorf("ends in a carriage return (CRLF); the file was changed after sha256sum wrote it")
	case line[0] == '\\':
		return "", digest, fmt.Errorf("an escaped name (leading '\\'); release file names never need one")
	case len(line) < 66:
		return "", digest, fmt.Errorf("too short for \"<64 hex>  <name>\"")
	}
	hexDigest, sep, name := line[:64], line[64:66], line[66:]
	if sep != "  " && sep != " *" {
		return "", digest, fmt.Errorf("want two spaces or \" *\" after the digest, found %q", sep)
	}
	if !isLowerHex(hexDigest) {
		return "", digest, fmt.Errorf("the digest is not 64 lower-case hex digits")
	}
	if _, err := hex.Decode(digest[:], []byte(hexDigest)); err != nil {
		return "", digest, fmt.Errorf("the digest: %v", err)
	}
	if err := checkFileName(name); err != nil {
		return "", digest, err
	}
	return name, digest, nil
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkFileName refuses a name that is not a plain release file name.
func checkFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("no file name")
	case len(name) > maxNameLen:
		return fmt.Errorf("file name longer than %d bytes", maxNameLen)
	case strings.Contains(name, "/"):
		return fmt.Errorf("%q is a path, not a file name", clip(name, 64))
	case name[0] == '.':
		return fmt.Errorf("%q starts with '.'; release file names do not", clip(name, 64))
	}
	for _, c := range []byte(name) {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' && c != '+' {
			return fmt.Errorf("file name %q has a byte (%q) outside [A-Za-z0-9._+-]", clip(name, 64), c)
		}
	}
	return nil
}

// Check returns an error unless name is listed with digest. The error
// names the file and both digests (their first 12 hex digits).
func (s Sums) Check(name string, digest [32]byte) error {
	want, ok := s[name]
	if !ok {
		return fmt.Errorf("%s is not listed in SHA256SUMS; refusing a file the release did not sign", name)
	}
	if want != digest {
		return fmt.Errorf("checksum of %s does not match SHA256SUMS (got %s…, SHA256SUMS says %s…): the download is damaged or was tampered with; nothing was installed",
			name, hex.EncodeToString(digest[:6]), hex.EncodeToString(want[:6]))
	}
	return nil
}

// Bytes renders s as sha256sum writes it: "<hex>  <name>\n" lines sorted
// by name. ParseSums reads it back.
func (s Sums) Bytes() []byte {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		d := s[n]
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	return b.Bytes()
}
