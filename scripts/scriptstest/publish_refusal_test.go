package scriptstest

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// pinKey replaces the pinned block in verify_signature.go and install.sh
// of repo with key's, and commits: a tree whose release key is key.
func pinKey(t *testing.T, repo string, key testKey) {
	t.Helper()
	for _, rel := range []string{"internal/release/verify_signature.go", "scripts/install.sh"} {
		p := filepath.Join(repo, rel)
		data := readFile(t, p)
		blocks, err := pemBlocks(data)
		if err != nil || len(blocks) != 1 {
			t.Fatalf("%s: blocks %v, %v", rel, blocks, err)
		}
		writeFile(t, p, bytes.Replace(data, []byte(blocks[0]), key.pubPEM, 1))
	}
	git(t, repo, "commit", "-q", "-am", "pin a test key")
}

// Without a key override, DIR/install.sh is the tree's own, unchanged.
// The tree pins the test key here, since only it can sign.
func TestPublishDryRunKeepsInstallShWithoutOverride(t *testing.T) {
	repo := repoCopy(t)
	key := newTestKey(t, t.TempDir(), "pinned")
	pinKey(t, repo, key)
	bins := filepath.Join(t.TempDir(), "bins")
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		writeFile(t, filepath.Join(bins, runtime.GOARCH, b), []byte("#!/bin/sh\necho "+b+"\n"))
	}
	tree := filepath.Join(t.TempDir(), "tree")
	r := publish(t, repo, []string{"SIGNING_KEY=" + key.keyFile, "PREBUILT_BIN_DIR=" + bins, "ARCHES=" + runtime.GOARCH},
		relVersion, "--dry-run", tree, "--skip-tests")
	if r.err != nil {
		t.Fatalf("dry run: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	if !bytes.Equal(readFile(t, filepath.Join(tree, "install.sh")), readFile(t, filepath.Join(repo, "scripts", "install.sh"))) {
		t.Error("without an override the dry run's install.sh is not the tree's")
	}
	if strings.Contains(r.stderr, "KEY OVERRIDE") {
		t.Errorf("a dry run without keyOverride talked about an override:\n%s", r.stderr)
	}
	for _, loud := range []string{"PREBUILT_BIN_DIR", "--skip-tests"} {
		if !strings.Contains(r.stderr, loud) {
			t.Errorf("the weakened run does not say %q loudly:\n%s", loud, r.stderr)
		}
	}
	vdir := filepath.Join(tree, relVersion)
	if err := opensslVerify(t, key.pubFile, filepath.Join(vdir, "SHA256SUMS"), filepath.Join(vdir, "SHA256SUMS.sig")); err != nil {
		t.Errorf("openssl does not verify the signature: %v", err)
	}
}

func TestPublishRefuses(t *testing.T) {
	needTools(t, "git", "openssl", "tar", "gzip", "sha256sum", "make")
	keys := t.TempDir()
	key := newTestKey(t, keys, "test")
	other := newTestKey(t, keys, "other")
	dry := func(dir string) []string { return []string{relVersion, "--dry-run", dir, "--skip-tests"} }
	sign := "SIGNING_KEY=" + key.keyFile
	withOverride := []string{sign, "EXTRA_LDFLAGS=" + key.override()}

	cases := []struct {
		name  string
		setup func(t *testing.T, repo, out string) // may change the repo
		env   []string
		args  func(out string) []string
		want  string
	}{
		{"dirty tree", func(t *testing.T, repo, _ string) {
			writeFile(t, filepath.Join(repo, "stray.txt"), []byte("x"))
		}, withOverride, dry, "uncommitted changes"},
		{"branch other than main", func(t *testing.T, repo, _ string) {
			git(t, repo, "checkout", "-q", "-b", "topic")
		}, withOverride, dry, "cut from main"},
		{"no CHANGELOG entry", nil, withOverride, func(out string) []string {
			return []string{"v0.0.3", "--dry-run", out, "--skip-tests"}
		}, "no '## [0.0.3] - YYYY-MM-DD' entry"},
		{"heading outside Keep a Changelog", func(t *testing.T, repo, _ string) {
			p := filepath.Join(repo, "CHANGELOG.md")
			writeFile(t, p, bytes.Replace(readFile(t, p), []byte("### Fixed\n- A test release."), []byte("### Notes\n- A test release."), 1))
			git(t, repo, "commit", "-q", "-am", "bad heading")
		}, withOverride, dry, "### Notes"},
		{"no link line", func(t *testing.T, repo, _ string) {
			p := filepath.Join(repo, "CHANGELOG.md")
			data := readFile(t, p)
			i := bytes.Index(data, []byte("\n[0.0.2]: "))
			writeFile(t, p, data[:i+1])
			git(t, repo, "commit", "-q", "-am", "no link")
		}, withOverride, dry, "link line"},
		{"key drift", func(t *testing.T, repo, _ string) {
			p := filepath.Join(repo, "scripts", "install.sh")
			writeFile(t, p, bytes.Replace(readFile(t, p), []byte("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGDUK"), []byte("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGDUL"), 1))
			git(t, repo, "commit", "-q", "-am", "drift")
		}, withOverride, dry, "KEY DRIFT"},
		{"signing key is not the pinned one", nil, []string{sign}, dry, "is not the pinned release key"},
		{"signing key is not the override", nil, []string{"SIGNING_KEY=" + other.keyFile, "EXTRA_LDFLAGS=" + key.override()}, dry, "not the key EXTRA_LDFLAGS makes the build trust"},
		{"PUBKEY_PEM is not the override", nil, append([]string{"PUBKEY_PEM=" + other.pubFile}, withOverride...), dry, "PUBKEY_PEM"},
		{"EXTRA_LDFLAGS without --dry-run", nil, []string{sign, "EXTRA_LDFLAGS=" + key.override(), "UPLOADER=dir:/nonexistent"}, func(string) []string {
			return []string{relVersion}
		}, "EXTRA_LDFLAGS is set"},
		{"--skip-tests without --dry-run", nil, []string{sign, "UPLOADER=dir:/nonexistent"}, func(string) []string {
			return []string{relVersion, "--skip-tests"}
		}, "for --dry-run only"},
		{"no uploader", nil, []string{sign}, func(string) []string { return []string{relVersion} }, "set UPLOADER"},
		{"not semver", nil, withOverride, func(out string) []string {
			return []string{"0.0.2", "--dry-run", out}
		}, "is not a version"},
		{"already tagged", func(t *testing.T, repo, _ string) {
			git(t, repo, "tag", "-a", relVersion, "-m", "x")
		}, withOverride, dry, "already tagged"},
		{"already in the tree", func(t *testing.T, _, out string) {
			writeFile(t, filepath.Join(out, relVersion, "SHA256SUMS"), []byte("x"))
		}, withOverride, dry, "already in the release tree"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := repoCopy(t)
			out := filepath.Join(t.TempDir(), "tree")
			if tc.setup != nil {
				tc.setup(t, repo, out)
			}
			before := files(t, filepath.Dir(out))
			r := publish(t, repo, tc.env, tc.args(out)...)
			if r.err == nil || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("err %v, stderr:\n%s\nwant a refusal mentioning %q", r.err, r.stderr, tc.want)
			}
			if after := files(t, filepath.Dir(out)); len(after) != len(before) {
				t.Errorf("a refused run wrote %v", after)
			}
			if strings.Contains(r.stdout, "make build") || strings.Contains(r.stdout, "make test") {
				t.Errorf("a refused run went on to build or test:\n%s", r.stdout)
			}
		})
	}
}

// A change to packaging/systemd since the last release tag is announced
// loudly; none is not.
func TestPublishNoticesUnitChanges(t *testing.T) {
	repo := repoCopy(t)
	key := newTestKey(t, t.TempDir(), "pinned")
	pinKey(t, repo, key)
	bins := filepath.Join(t.TempDir(), "bins")
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		writeFile(t, filepath.Join(bins, runtime.GOARCH, b), []byte("#!/bin/sh\n"))
	}
	git(t, repo, "tag", "-a", "v0.0.1", "-m", "v0.0.1")
	env := []string{"SIGNING_KEY=" + key.keyFile, "PREBUILT_BIN_DIR=" + bins, "ARCHES=" + runtime.GOARCH}
	r := publish(t, repo, env, relVersion, "--dry-run", filepath.Join(t.TempDir(), "a"), "--skip-tests")
	if r.err != nil || strings.Contains(r.stderr, "UNIT FILES CHANGED") {
		t.Fatalf("unchanged units: err %v, stderr:\n%s", r.err, r.stderr)
	}
	p := filepath.Join(repo, "packaging", "systemd", "bangerd.service")
	writeFile(t, p, append(readFile(t, p), "# changed\n"...))
	git(t, repo, "commit", "-q", "-am", "change a unit")
	r = publish(t, repo, env, relVersion, "--dry-run", filepath.Join(t.TempDir(), "b"), "--skip-tests")
	if r.err != nil || !strings.Contains(r.stderr, "UNIT FILES CHANGED since v0.0.1") {
		t.Fatalf("changed units: err %v, stderr:\n%s\nwant the unit notice", r.err, r.stderr)
	}
}

// The CI rehearsal publishes a dirty checkout on another branch, without a
// CHANGELOG entry, with a throwaway key, says loudly that the pre-flight
// was weakened, and installs the result with its install.sh.
func TestReleaseDryRunScript(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds banger")
	}
	repo := repoCopy(t)
	git(t, repo, "checkout", "-q", "-b", "topic")
	writeFile(t, filepath.Join(repo, "stray.txt"), []byte("x"))
	out := filepath.Join(t.TempDir(), "release")
	r := runIn(t, repo, filepath.Join(repo, "scripts", "release-dry-run.sh"), "v0.0.9", out)
	if r.err != nil {
		t.Fatalf("release-dry-run.sh: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	for _, loud := range []string{"--allow-dirty", "--skip-changelog", "--skip-tests", "KEY OVERRIDE"} {
		if !strings.Contains(r.stderr, loud) {
			t.Errorf("the weakened dry run does not say %q loudly:\n%s", loud, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "installed from it with install.sh") {
		t.Errorf("no install from the rehearsal tree:\n%s", r.stdout)
	}
	if got := string(readFile(t, filepath.Join(out, "latest"))); got != "v0.0.9\n" {
		t.Errorf("latest = %q", got)
	}
}

func runIn(t *testing.T, dir, script string, args ...string) result {
	t.Helper()
	return publishLike(t, dir, script, nil, args...)
}

// Versions only go up in a release tree, and a prerelease moves neither
// latest nor the root install.sh.
func TestPublishVersionOrderAndPrereleases(t *testing.T) {
	repo := repoCopy(t)
	key := newTestKey(t, t.TempDir(), "pinned")
	pinKey(t, repo, key)
	bins := filepath.Join(t.TempDir(), "bins")
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		writeFile(t, filepath.Join(bins, runtime.GOARCH, b), []byte("#!/bin/sh\n"))
	}
	tree := filepath.Join(t.TempDir(), "tree")
	env := []string{"SIGNING_KEY=" + key.keyFile, "PREBUILT_BIN_DIR=" + bins, "ARCHES=" + runtime.GOARCH}
	run := func(v string) result {
		return publish(t, repo, env, v, "--dry-run", tree, "--skip-tests", "--skip-changelog")
	}
	if r := run(relVersion); r.err != nil {
		t.Fatalf("%s: %v\n%s", relVersion, r.err, r.stderr)
	}
	writeFile(t, filepath.Join(tree, "install.sh"), []byte("# the root installer of v0.0.2\n"))
	r := run("v0.0.3-rc.1")
	if r.err != nil || !strings.Contains(r.stderr, "PRERELEASE v0.0.3-rc.1") {
		t.Fatalf("prerelease: %v\n%s", r.err, r.stderr)
	}
	if got := string(readFile(t, filepath.Join(tree, "latest"))); got != relVersion+"\n" {
		t.Errorf("a prerelease moved latest to %q", got)
	}
	if got := string(readFile(t, filepath.Join(tree, "install.sh"))); got != "# the root installer of v0.0.2\n" {
		t.Error("a prerelease replaced the root install.sh")
	}
	if _, err := os.Stat(filepath.Join(tree, "v0.0.3-rc.1", "SHA256SUMS.sig")); err != nil {
		t.Errorf("the prerelease's own files: %v", err)
	}
	for _, old := range []string{"v0.0.1", "v0.0.2-rc.1"} {
		if r := run(old); r.err == nil || !strings.Contains(r.stderr, "not newer") {
			t.Errorf("%s after %s: %v\n%s\nwant a refusal", old, relVersion, r.err, r.stderr)
		}
	}
}
