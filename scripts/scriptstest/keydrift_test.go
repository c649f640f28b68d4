package scriptstest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	pemBegin = "-----BEGIN PUBLIC KEY-----"
	pemEnd   = "-----END PUBLIC KEY-----"
)

// pemBlocks returns each PEM PUBLIC KEY block of src: from its BEGIN line
// (text before BEGIN on that line dropped, as for a Go raw string) through
// its END line and the newline after it.
func pemBlocks(src []byte) ([]string, error) {
	var blocks []string
	rest := string(src)
	for {
		i := strings.Index(rest, pemBegin)
		if i < 0 {
			return blocks, nil
		}
		rest = rest[i:]
		j := strings.Index(rest, pemEnd)
		if j < 0 {
			return nil, errors.New("a BEGIN PUBLIC KEY line has no END line")
		}
		end := j + len(pemEnd)
		if end < len(rest) && rest[end] == '\n' {
			end++
		}
		blocks = append(blocks, rest[:end])
		rest = rest[end:]
	}
}

// checkKeyDrift is the rule the publish script also enforces: each file
// holds exactly one PEM public key block, and the two are the same bytes.
func checkKeyDrift(goSrc, shSrc []byte) error {
	g, err := pemBlocks(goSrc)
	if err != nil {
		return fmt.Errorf("verify_signature.go: %w", err)
	}
	s, err := pemBlocks(shSrc)
	if err != nil {
		return fmt.Errorf("install.sh: %w", err)
	}
	if len(g) != 1 || len(s) != 1 {
		return fmt.Errorf("verify_signature.go has %d PEM public key blocks and install.sh %d; want exactly one each", len(g), len(s))
	}
	if g[0] != s[0] {
		return fmt.Errorf("the pinned keys differ:\nverify_signature.go:\n%sinstall.sh:\n%s", g[0], s[0])
	}
	return nil
}

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The key in verify_signature.go and the one in install.sh are the same
// bytes; a release signed for one is accepted by the other.
func TestPinnedKeyIsTheSameInGoAndInstallSh(t *testing.T) {
	goSrc := readRepoFile(t, "internal/release/verify_signature.go")
	shSrc := readRepoFile(t, "scripts/install.sh")
	if err := checkKeyDrift(goSrc, shSrc); err != nil {
		t.Fatal(err)
	}
	blocks, _ := pemBlocks(shSrc)
	if !strings.HasSuffix(blocks[0], pemEnd+"\n") || strings.Contains(blocks[0], "\r") {
		t.Errorf("the pinned block must end with its END line and a LF, no CR:\n%q", blocks[0])
	}
}

// The check fails when the two differ, by one character, by a CR, or by an
// extra block in install.sh.
func TestKeyDriftCheckCatchesDrift(t *testing.T) {
	goSrc := readRepoFile(t, "internal/release/verify_signature.go")
	shSrc := readRepoFile(t, "scripts/install.sh")
	blocks, err := pemBlocks(shSrc)
	if err != nil || len(blocks) != 1 {
		t.Fatalf("install.sh blocks: %v, %v", blocks, err)
	}
	block := blocks[0]
	// One base64 character of the key changed.
	line2 := strings.Index(block, "\n") + 1
	flipped := []byte(block)
	if flipped[line2+10] == 'A' {
		flipped[line2+10] = 'B'
	} else {
		flipped[line2+10] = 'A'
	}
	for name, sh := range map[string][]byte{
		"one character":   bytes.Replace(shSrc, []byte(block), flipped, 1),
		"CRLF":            bytes.Replace(shSrc, []byte(block), []byte(strings.ReplaceAll(block, "\n", "\r\n")), 1),
		"a second block":  append(append([]byte{}, shSrc...), []byte("# "+block)...),
		"no block at all": bytes.Replace(shSrc, []byte(block), nil, 1),
		"no END line":     bytes.Replace(shSrc, []byte(pemEnd), []byte("-----END-----"), 1),
	} {
		if err := checkKeyDrift(goSrc, sh); err == nil {
			t.Errorf("%s: the drift check passed a mutated install.sh", name)
		}
	}
	if err := checkKeyDrift(goSrc, shSrc); err != nil {
		t.Errorf("the unmutated pair fails: %v", err)
	}
}
