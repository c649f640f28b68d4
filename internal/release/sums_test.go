package release

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const hexA = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

func TestParseSumsGood(t *testing.T) {
	in := hexA + "  banger_v0.3.1_linux_amd64.tar.gz\n" + strings.Repeat("0", 64) + " *bangerd.service\n"
	s, err := ParseSums([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || s["bangerd.service"] != [32]byte{} {
		t.Fatalf("sums: %v", s)
	}
	if err := s.Check("banger_v0.3.1_linux_amd64.tar.gz", sha256.Sum256([]byte("abc"))); err != nil {
		t.Fatal(err)
	}
	// No final newline is fine too.
	if _, err := ParseSums([]byte(strings.TrimSuffix(in, "\n"))); err != nil {
		t.Fatal(err)
	}
	// Bytes round trips, sorted.
	back, err := ParseSums(s.Bytes())
	if err != nil || len(back) != 2 || !strings.HasPrefix(string(s.Bytes()), hexA+"  banger_v0.3.1") {
		t.Fatalf("Bytes: %q, %v", s.Bytes(), err)
	}
}

// What sha256sum itself writes parses.
func TestParseSumsOfSha256sum(t *testing.T) {
	bin, err := exec.LookPath("sha256sum")
	if err != nil {
		t.Skipf("needs sha256sum (coreutils) to check its output parses: %v", err)
	}
	dir := t.TempDir()
	names := []string{"banger-helper.service", "banger_v0.3.1_linux_amd64.tar.gz", "bangerd.service"}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), bytes.Repeat([]byte{byte(i)}, 100*i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, names...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSums(out)
	if err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	for i, n := range names {
		if err := s.Check(n, sha256.Sum256(bytes.Repeat([]byte{byte(i)}, 100*i))); err != nil {
			t.Error(err)
		}
	}
	if !bytes.Equal(s.Bytes(), out) {
		t.Errorf("Bytes() = %q, sha256sum wrote %q", s.Bytes(), out)
	}
}

func TestParseSumsRefusals(t *testing.T) {
	line := func(name string) string { return hexA + "  " + name + "\n" }
	bad := map[string]string{
		"empty":           "",
		"only newline":    "\n",
		"blank line":      line("a") + "\n" + line("b"),
		"trailing blank":  line("a") + "\n",
		"duplicate":       line("a") + line("b") + line("a"),
		"CRLF":            hexA + "  a\r\n",
		"upper hex":       strings.ToUpper(hexA) + "  a\n",
		"bad hex":         strings.Repeat("g", 64) + "  a\n",
		"short hex":       hexA[:62] + "  a\n",
		"long hex":        hexA + "00  a\n",
		"one space":       hexA + " a\n",
		"tab":             hexA + "\t a\n",
		"three spaces":    hexA + "   a\n",
		"path":            line("dir/a"),
		"absolute":        line("/etc/passwd"),
		"dotdot":          line(".."),
		"dot":             line("."),
		"hidden":          line(".a"),
		"control":         line("a\x01b"),
		"space in name":   line("a b"),
		"no name":         hexA + "  \n",
		"escaped":         "\\" + line("a"),
		"long name":       line(strings.Repeat("a", 256)),
		"digest only":     hexA + "\n",
		"oversized":       strings.Repeat(line("a"), MaxSumsSize/len(line("a"))+1),
		"leading garbage": "x" + line("a"),
	}
	for name, in := range bad {
		if _, err := ParseSums([]byte(in)); err == nil {
			t.Errorf("%s: %q parsed", name, in)
		} else if !strings.Contains(err.Error(), "SHA256SUMS") {
			t.Errorf("%s: error %q does not name SHA256SUMS", name, err)
		}
	}
}

func TestSumsCheck(t *testing.T) {
	good := sha256.Sum256([]byte("good"))
	s := Sums{"bangerd.service": good}
	if err := s.Check("bangerd.service", good); err != nil {
		t.Fatal(err)
	}
	err := s.Check("bangerd.service", sha256.Sum256([]byte("bad")))
	if err == nil {
		t.Fatal("mismatch accepted")
	}
	for _, want := range []string{"bangerd.service", "does not match SHA256SUMS", "2f05d4b689d2", "770e607624d6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := s.Check("other", good); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("unlisted: %v", err)
	}
}

func FuzzParseSums(f *testing.F) {
	f.Add([]byte(hexA + "  banger_v0.3.1_linux_amd64.tar.gz\n" + hexA + " *bangerd.service\n"))
	f.Add([]byte(hexA + "  a\r\n"))
	f.Add([]byte(""))
	f.Add([]byte(hexA + "  ../x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSums(data)
		if err != nil {
			return
		}
		if len(s) == 0 {
			t.Fatal("no error and no sums")
		}
		for name, d := range s {
			if checkFileName(name) != nil || strings.ContainsAny(name, "/\n\r\x00") {
				t.Fatalf("name %q accepted", name)
			}
			if s.Check(name, d) != nil {
				t.Fatalf("Check(%q) fails on its own digest", name)
			}
		}
		back, err := ParseSums(s.Bytes())
		if err != nil || len(back) != len(s) {
			t.Fatalf("Bytes() does not parse back: %v", err)
		}
	})
}
