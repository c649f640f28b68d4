package scriptstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The release tests share one checkout copy (a git repository committed
// on main with a CHANGELOG entry for relVersion) and one real dry-run
// build of it, signed by a throwaway key, so the Go binaries are built
// once per run (the reproducibility test builds them a second time).
const relVersion = "v0.0.2"

// fixtureDir holds what the shared fixtures make; TestMain removes it.
var fixtureDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

func sharedDir(t *testing.T) string {
	t.Helper()
	dirOnce.Do(func() {
		d, err := os.MkdirTemp("", "banger-release-test-")
		if err == nil {
			fixtureDir = d
		}
	})
	if fixtureDir == "" {
		t.Fatal("cannot make a temp dir for the release fixtures")
	}
	return fixtureDir
}

var dirOnce sync.Once

// testKey is a throwaway P-256 key written as a PEM private key (what
// SIGNING_KEY takes) and a PEM public key.
type testKey struct {
	priv    *ecdsa.PrivateKey
	keyFile string // PEM "EC PRIVATE KEY"
	pubFile string // PEM "PUBLIC KEY"
	pubPEM  []byte
	derB64  string // base64 of the PKIX DER: what keyOverride takes
}

func newTestKey(t *testing.T, dir, name string) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := testKey{
		priv:    priv,
		keyFile: filepath.Join(dir, name+".key"),
		pubFile: filepath.Join(dir, name+".pub"),
		pubPEM:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		derB64:  base64.StdEncoding.EncodeToString(pub),
	}
	if err := os.WriteFile(k.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.pubFile, k.pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// sign is what `openssl dgst -sha256 -sign | base64 -w0` makes.
func (k testKey) sign(t *testing.T, payload []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n")
}

func (k testKey) override() string {
	return "-X banger/internal/release.keyOverride=" + k.derB64
}

// git runs git in dir with a fixed identity and dates.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.invalid",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.invalid",
		"GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// changelogEntry adds a release entry for v (without the v) and the link
// lines the publish script wants.
func changelogEntry(t *testing.T, repo, v string) {
	t.Helper()
	p := filepath.Join(repo, "CHANGELOG.md")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), "## [Unreleased]\n",
		"## [Unreleased]\n\n## ["+v+"] - 2026-01-02\n\n### Fixed\n- A test release.\n", 1)
	s = strings.TrimRight(s, "\n") + "\n\n[Unreleased]: https://example.invalid/banger/compare/v" + v +
		"...HEAD\n[" + v + "]: https://example.invalid/banger/releases/tag/v" + v + "\n"
	writeFile(t, p, []byte(s))
}

var (
	baseOnce sync.Once
	baseRepo string
	baseErr  error
)

// repoCopy returns a fresh clone of a copy of this checkout (tracked and
// untracked-but-not-ignored files), committed on main, with a CHANGELOG
// entry for relVersion.
func repoCopy(t *testing.T) string {
	t.Helper()
	needTools(t, "git", "openssl", "tar", "gzip", "sha256sum", "make")
	shared := sharedDir(t)
	baseOnce.Do(func() {
		baseRepo = filepath.Join(shared, "base")
		baseErr = copyCheckout(t, repoRoot(t), baseRepo)
		if baseErr == nil {
			changelogEntry(t, baseRepo, strings.TrimPrefix(relVersion, "v"))
			git(t, baseRepo, "init", "-q", "-b", "main")
			git(t, baseRepo, "add", "-A")
			git(t, baseRepo, "commit", "-q", "-m", "test release")
		}
	})
	if baseErr != nil {
		t.Fatalf("copying the checkout: %v", baseErr)
	}
	dst := filepath.Join(t.TempDir(), "repo")
	git(t, filepath.Dir(dst), "clone", "-q", baseRepo, dst)
	return dst
}

func copyCheckout(t *testing.T, src, dst string) error {
	cmd := exec.CommandContext(t.Context(), "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = src
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files in %s: %w", src, err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		st, err := os.Lstat(filepath.Join(src, rel))
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the work tree, or a link: not needed to build
		}
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, rel), data, st.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

// publish runs scripts/publish-banger-release.sh of repo with env added to
// an environment cleaned of the script's own variables.
func publish(t *testing.T, repo string, env []string, args ...string) result {
	t.Helper()
	return publishLike(t, repo, filepath.Join(repo, "scripts", "publish-banger-release.sh"), env, args...)
}

// publishLike runs script with bash in repo, in the cleaned environment
// plus env.
func publishLike(t *testing.T, repo, script string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{script}, args...)...)
	cmd.Dir = repo
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "SIGNING_KEY", "UPLOADER", "ARCHES", "EXTRA_LDFLAGS", "PUBKEY_PEM", "PREBUILT_BIN_DIR", "SOURCE_DATE_EPOCH", "S3_ENDPOINT":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

// relFixture is one real dry-run release tree, signed by key, whose
// binaries trust key (keyOverride) and whose install.sh carries it.
type relFixture struct {
	repo string
	tree string
	key  testKey
}

var (
	relOnce sync.Once
	rel     relFixture
	relErr  string
)

func releaseTree(t *testing.T) relFixture {
	t.Helper()
	needTools(t, "git", "openssl", "tar", "gzip", "sha256sum", "make")
	relOnce.Do(func() {
		repo := repoCopy(t)
		shared := sharedDir(t)
		// The repo must outlive this test: move it beside the other fixtures.
		kept := filepath.Join(shared, "release-repo")
		if err := os.Rename(repo, kept); err != nil {
			relErr = err.Error()
			return
		}
		key := newTestKey(t, shared, "release")
		tree := filepath.Join(shared, "tree")
		r := publish(t, kept, []string{"SIGNING_KEY=" + key.keyFile, "EXTRA_LDFLAGS=" + key.override(), "ARCHES=" + runtime.GOARCH},
			relVersion, "--dry-run", tree, "--skip-tests")
		if r.err != nil {
			relErr = fmt.Sprintf("publish --dry-run: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
			return
		}
		rel = relFixture{repo: kept, tree: tree, key: key}
	})
	if relErr != "" {
		t.Fatal(relErr)
	}
	return rel
}

func archiveName(goarch string) string {
	return "banger_" + relVersion + "_linux_" + goarch + ".tar.gz"
}
