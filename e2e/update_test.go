//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/testutil/bangerenv"
	"banger/internal/testutil/treestate"
)

// releaseFixture is a signed release tree made by the real publish script
// from a clone of this checkout: v0.0.1 and v0.0.2 built with a throwaway
// key the binaries trust, plus hand-made broken versions.
type releaseFixture struct {
	tree    string // the release tree served over HTTP
	key     string // the throwaway signing key (PEM EC private key)
	pubPEM  []byte
	archive string // the archive name of a version, with %s for it
}

// TestUpdate installs v0.0.1 with install.sh from a release tree served on
// 127.0.0.1, runs a VM under its bangerd, updates to v0.0.2 with `banger
// update`, and checks that the binaries, the daemon and the VM all made it
// across; then a release whose bangerd cannot start is rolled back, and
// releases with a bad signature, a wrong checksum or a truncated archive
// are refused with nothing changed.
func TestUpdate(t *testing.T) {
	w := start(t)
	if r := bangerenv.Need("openssl", "tar", "gzip", "git", "make", "sh", "sha256sum"); r != "" {
		t.Skip(r)
	}
	rel := makeReleases(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(rel.tree)))
	defer srv.Close()

	root := t.TempDir()
	prefix := filepath.Join(root, "prefix")
	install := exec.Command("sh", filepath.Join(rel.tree, "install.sh"),
		"--version", "v0.0.1", "--prefix", prefix, "--base-url", srv.URL)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install.sh v0.0.1: %v\n%s", err, out)
	}
	run := testutil.ShortDir(t, "bgu")
	cfg := baseConfig + "network = \"user\"\nhosts_file = \"\"\nrelease_url = \"" + srv.URL + "\"\n"
	u, err := newEnv(filepath.Join(prefix, "bin"), filepath.Join(root, "home"), run, cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	// The host's own systemd is none of this test's business: a stand-in
	// systemctl says no banger unit is active, and SUDO_UID is unset so
	// that the update acts for the user running it.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u.ExtraEnv = append(u.ExtraEnv, "PATH="+fake+":"+os.Getenv("PATH"), "SUDO_UID=", "BANGER_DAEMON_BIN=")
	defer u.StopDaemon()
	u.Must(t, "-q", "kernel", "import", "--name", "k", w.deb)
	u.Must(t, "-q", "image", "register", "e2e", "--rootfs", w.image, "--kernel", "k")
	u.Must(t, "-q", "vm", "run", "e2e", "--name", "kept", "--", "true")
	defer u.CLI("vm", "rm", "-f", "kept")
	wantVersions(t, u, "v0.0.1")
	vms := vmProcesses(u.Runtime)
	if len(vms) != 1 {
		t.Fatalf("want one QEMU running under v0.0.1, have %v", vms)
	}

	if out := u.Must(t, "update", "--check"); !strings.Contains(out, "v0.0.1") || !strings.Contains(out, "v0.0.2") {
		t.Fatalf("update --check does not name both versions:\n%s", out)
	}
	u.Must(t, "update", "--yes")
	wantVersions(t, u, "v0.0.2")
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		if _, err := os.Stat(filepath.Join(prefix, "bin", b+".prev")); err != nil {
			t.Errorf("no %s.prev after the update: %v", b, err)
		}
	}
	wantVMKept(t, u, vms)

	t.Run("bangerd-that-cannot-start-is-rolled-back", func(t *testing.T) {
		pid := u.DaemonPID()
		out, code := u.CLI("update", "--version", "v0.0.3", "--yes")
		if code == 0 || !strings.Contains(out, "v0.0.2 was put back") {
			t.Fatalf("update to a broken bangerd: exit %d\n%s", code, out)
		}
		wantVersions(t, u, "v0.0.2")
		if u.DaemonPID() == pid {
			t.Fatalf("bangerd kept pid %d: the update never stopped it", pid)
		}
		wantVMKept(t, u, vms)
	})

	for _, c := range []struct{ version, why string }{
		{"v0.0.4", "signature"},
		{"v0.0.5", "checksum"},
		{"v0.0.6", "checksum"},
	} {
		t.Run("refused-"+c.version, func(t *testing.T) {
			before := treestate.Snapshot(t, prefix)
			pid := u.DaemonPID()
			out, code := u.CLI("update", "--version", c.version, "--yes")
			if code == 0 || !strings.Contains(strings.ToLower(out), c.why) {
				t.Fatalf("update to %s (bad %s): exit %d\n%s", c.version, c.why, code, out)
			}
			if after := treestate.Snapshot(t, prefix); !reflect.DeepEqual(before, after) {
				t.Fatalf("a refused update changed the install")
			}
			if u.DaemonPID() != pid {
				t.Fatalf("a refused update restarted bangerd (%d -> %d)", pid, u.DaemonPID())
			}
		})
	}
	wantVMKept(t, u, vms)
}

// wantVersions checks that the installed CLI and the daemon it talks to
// both report version v.
func wantVersions(t *testing.T, u *env, v string) {
	t.Helper()
	out := u.Must(t, "version")
	if first, _, _ := strings.Cut(out, "\n"); !strings.Contains(first, v) {
		t.Fatalf("banger version: %q, want %s", out, v)
	}
	var st struct {
		Running bool
		Daemon  struct{ Version string }
	}
	if err := json.Unmarshal([]byte(u.Must(t, "daemon", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.Daemon.Version != v {
		t.Fatalf("bangerd: running %v, version %q; want %s", st.Running, st.Daemon.Version, v)
	}
}

// wantVMKept checks that the VM's QEMU is the same process as before and
// that the daemon running now has adopted it.
func wantVMKept(t *testing.T, u *env, vms []int) {
	t.Helper()
	if now := vmProcesses(u.Runtime); !reflect.DeepEqual(now, vms) {
		t.Fatalf("QEMU processes changed across the update: %v -> %v", vms, now)
	}
	if out := u.Must(t, "vm", "exec", "kept", "--", "echo", "adopted"); out != "adopted\n" {
		t.Fatalf("vm exec after the update: %q", out)
	}
}

// makeReleases publishes this checkout as v0.0.1 and v0.0.2 with the real
// publish script (--dry-run, into one tree), signed by a throwaway key the
// builds trust; then adds the broken versions by hand.
func makeReleases(t *testing.T) *releaseFixture {
	t.Helper()
	dir := t.TempDir()
	rel := &releaseFixture{tree: filepath.Join(dir, "tree"), key: filepath.Join(dir, "release.key")}
	rel.pubPEM = makeKey(t, rel.key)
	override := keyOverride(t, rel.pubPEM)
	for _, v := range []string{"v0.0.1", "v0.0.2"} {
		// The checkout may be dirty and on any branch, and its CHANGELOG
		// has no entry for these test versions: the dry run's weakening
		// flags say so loudly, and the rest of the pre-flight still runs.
		publish := exec.Command("bash", "scripts/publish-banger-release.sh", v, "--dry-run", rel.tree,
			"--skip-tests", "--allow-dirty", "--skip-changelog")
		publish.Dir = ".."
		publish.Env = append(os.Environ(), "SIGNING_KEY="+rel.key,
			"EXTRA_LDFLAGS=-X banger/internal/release.keyOverride="+override)
		if out, err := publish.CombinedOutput(); err != nil {
			t.Fatalf("publish %s --dry-run: %v\n%s", v, err, out)
		}
	}
	rel.archive = "banger_%s_linux_amd64.tar.gz"
	rel.brokenReleases(t)
	return rel
}

// brokenReleases adds, from v0.0.2's files: v0.0.3 whose bangerd exits at
// start; v0.0.4 signed by another key; v0.0.5 whose archive does not match
// its SHA256SUMS; v0.0.6 whose archive is cut short.
func (rel *releaseFixture) brokenReleases(t *testing.T) {
	t.Helper()
	good := rel.readArchive(t, "v0.0.2")
	broken := map[string][]byte{}
	for k, v := range good {
		broken[k] = v
	}
	broken["bangerd"] = []byte("#!/bin/sh\necho 'bangerd: this build cannot start' >&2\nexit 1\n")
	rel.writeVersion(t, "v0.0.3", broken, rel.key, nil)

	other := filepath.Join(t.TempDir(), "other.key")
	makeKey(t, other)
	rel.writeVersion(t, "v0.0.4", good, other, nil)
	rel.writeVersion(t, "v0.0.5", good, rel.key, func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[len(b)/2] ^= 0xff
		return b
	})
	rel.writeVersion(t, "v0.0.6", good, rel.key, func(b []byte) []byte { return b[:len(b)/2] })
}

// readArchive returns the entries of version v's archive.
func (rel *releaseFixture) readArchive(t *testing.T, v string) map[string][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(rel.tree, v, fmt.Sprintf(rel.archive, v)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
}

// writeVersion writes version v with the archive entries files, the units,
// SHA256SUMS signed with key, and then lets damage (when set) change the
// archive's bytes after they were summed.
func (rel *releaseFixture) writeVersion(t *testing.T, v string, files map[string][]byte, key string, damage func([]byte) []byte) {
	t.Helper()
	dir := filepath.Join(rel.tree, v)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := int64(0o644)
		if n == "banger" || n == "bangerd" || n == "banger-vsock-agent" {
			mode = 0o755
		}
		h := &tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	archive := fmt.Sprintf(rel.archive, v)
	written := map[string][]byte{
		archive:                 buf.Bytes(),
		"bangerd.service":       files["bangerd.service"],
		"banger-helper.service": files["banger-helper.service"],
	}
	var sums strings.Builder
	for _, n := range []string{"banger-helper.service", archive, "bangerd.service"} {
		d := sha256.Sum256(written[n])
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	if damage != nil {
		written[archive] = damage(written[archive])
	}
	written["SHA256SUMS"] = []byte(sums.String())
	for n, b := range written {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sig, err := exec.Command("openssl", "dgst", "-sha256", "-sign", key, filepath.Join(dir, "SHA256SUMS")).Output()
	if err != nil {
		t.Fatalf("sign %s: %v", v, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS.sig"), []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeKey writes a P-256 private key to path with openssl and returns the
// PEM of its public half.
func makeKey(t *testing.T, path string) []byte {
	t.Helper()
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	pub, err := exec.Command("openssl", "pkey", "-in", path, "-pubout").Output()
	if err != nil {
		t.Fatalf("openssl pkey -pubout: %v", err)
	}
	return pub
}

// keyOverride is the ldflags value that makes a build trust pubPEM.
func keyOverride(t *testing.T, pubPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(pubPEM)
	if b == nil {
		t.Fatal("the test key's public half is not PEM")
	}
	if _, err := x509.ParsePKIXPublicKey(b.Bytes); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)
}
