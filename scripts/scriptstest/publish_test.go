package scriptstest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// archiveEntry is one header of a release archive.
type archiveEntry struct {
	hdr  *tar.Header
	body []byte
}

func readArchive(t *testing.T, path string) []archiveEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("the gzip header carries a name %q or a time %v (gzip -n)", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var out []archiveEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, archiveEntry{h, body})
	}
}

// opensslVerify checks sigFile (base64) over payload against pub with
// openssl, as anyone can.
func opensslVerify(t *testing.T, pub, payload, sigFile string) error {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(readFile(t, sigFile))))
	if err != nil {
		t.Fatalf("%s is not base64: %v", sigFile, err)
	}
	derFile := filepath.Join(t.TempDir(), "sig.der")
	if err := os.WriteFile(derFile, der, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), "openssl", "dgst", "-sha256", "-verify", pub, "-signature", derFile, payload).CombinedOutput()
	if err != nil {
		return &exec.ExitError{Stderr: out}
	}
	return nil
}

func TestPublishDryRunWritesTheReleaseTree(t *testing.T) {
	rel := releaseTree(t)
	name := archiveName(runtime.GOARCH)
	want := []string{"install.sh", "latest",
		relVersion + "/SHA256SUMS", relVersion + "/SHA256SUMS.sig",
		relVersion + "/banger-helper.service", relVersion + "/" + name, relVersion + "/bangerd.service"}
	slices.Sort(want)
	if got := files(t, rel.tree); !slices.Equal(got, want) {
		t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := string(readFile(t, filepath.Join(rel.tree, "latest"))); got != relVersion+"\n" {
		t.Errorf("latest = %q", got)
	}
	vdir := filepath.Join(rel.tree, relVersion)

	// SHA256SUMS: sorted lines for the archive and both units, true digests.
	sums := strings.Split(strings.TrimSuffix(string(readFile(t, filepath.Join(vdir, "SHA256SUMS"))), "\n"), "\n")
	var names []string
	for _, l := range sums {
		hexsum, n, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not sha256sum format", l)
		}
		sum := sha256.Sum256(readFile(t, filepath.Join(vdir, n)))
		if hex.EncodeToString(sum[:]) != hexsum {
			t.Errorf("SHA256SUMS says %s for %s; the file's is %x", hexsum, n, sum)
		}
		names = append(names, n)
	}
	if !slices.Equal(names, []string{"banger-helper.service", name, "bangerd.service"}) {
		t.Errorf("SHA256SUMS lists %v", names)
	}
	if err := opensslVerify(t, rel.key.pubFile, filepath.Join(vdir, "SHA256SUMS"), filepath.Join(vdir, "SHA256SUMS.sig")); err != nil {
		t.Errorf("openssl does not verify SHA256SUMS.sig with the signing key: %s", err.(*exec.ExitError).Stderr)
	}
	for _, u := range []string{"bangerd.service", "banger-helper.service"} {
		if !bytes.Equal(readFile(t, filepath.Join(vdir, u)), readFile(t, filepath.Join(rel.repo, "packaging/systemd", u))) {
			t.Errorf("%s differs from packaging/systemd/%s", u, u)
		}
	}
	checkArchive(t, rel, filepath.Join(vdir, name))
	if _, err := os.Stat(filepath.Join(rel.repo, "build")); !os.IsNotExist(err) {
		t.Errorf("the dry run wrote the checkout's build/ (%v); it must build elsewhere", err)
	}

	// install.sh carries the override key in place of the pinned block, and
	// is otherwise the tree's.
	treeSh := readFile(t, filepath.Join(rel.tree, "install.sh"))
	repoSh := readFile(t, filepath.Join(rel.repo, "scripts", "install.sh"))
	blocks, err := pemBlocks(treeSh)
	if err != nil || len(blocks) != 1 || blocks[0] != string(rel.key.pubPEM) {
		t.Fatalf("the dry run's install.sh blocks %q (%v), want only the override key", blocks, err)
	}
	pinned, _ := pemBlocks(repoSh)
	if !bytes.Equal(bytes.Replace(treeSh, rel.key.pubPEM, []byte(pinned[0]), 1), repoSh) {
		t.Error("the dry run's install.sh differs from the tree's by more than the key block")
	}
}

func checkArchive(t *testing.T, rel relFixture, path string) {
	t.Helper()
	epoch, err := strconv.ParseInt(strings.TrimSpace(git(t, rel.repo, "log", "-1", "--format=%ct")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range readArchive(t, path) {
		h := e.hdr
		names = append(names, h.Name)
		mode := int64(0o644)
		if slices.Contains([]string{"banger", "bangerd", "banger-vsock-agent"}, h.Name) {
			mode = 0o755
		}
		if h.Typeflag != tar.TypeReg || h.Mode != mode || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: type %c mode %o uid %d gid %d owner %q/%q; want a regular file, %o, 0/0, no names",
				h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, mode)
		}
		if !h.ModTime.Equal(time.Unix(epoch, 0)) {
			t.Errorf("%s: mtime %v, want the commit's %v", h.Name, h.ModTime, time.Unix(epoch, 0))
		}
		switch h.Name {
		case "install.md", "CHANGELOG.md":
			src := filepath.Join(rel.repo, h.Name)
			if h.Name == "install.md" {
				src = filepath.Join(rel.repo, "docs", "install.md")
			}
			if !bytes.Equal(e.body, readFile(t, src)) {
				t.Errorf("%s in the archive differs from the tree's", h.Name)
			}
		}
	}
	want := []string{"CHANGELOG.md", "banger", "banger-helper.service", "banger-vsock-agent", "bangerd", "bangerd.service", "install.md"}
	if !slices.Equal(names, want) {
		t.Errorf("archive entries %v, want exactly (sorted) %v", names, want)
	}
}

// Two dry runs of one commit, in two clones, give the same archive bytes
// and the same SHA256SUMS.
func TestPublishDryRunIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds banger a second time")
	}
	rel := releaseTree(t)
	repo := repoCopy(t)
	if a, b := git(t, repo, "rev-parse", "HEAD"), git(t, rel.repo, "rev-parse", "HEAD"); a != b {
		t.Fatalf("the clones are at %s and %s", a, b)
	}
	tree := filepath.Join(t.TempDir(), "tree")
	r := publish(t, repo, []string{"SIGNING_KEY=" + rel.key.keyFile, "EXTRA_LDFLAGS=" + rel.key.override(), "ARCHES=" + runtime.GOARCH},
		relVersion, "--dry-run", tree, "--skip-tests")
	if r.err != nil {
		t.Fatalf("second dry run: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	for _, f := range []string{archiveName(runtime.GOARCH), "SHA256SUMS"} {
		a := readFile(t, filepath.Join(rel.tree, relVersion, f))
		b := readFile(t, filepath.Join(tree, relVersion, f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two dry runs of one commit (%d and %d bytes)", f, len(a), len(b))
		}
	}
}
