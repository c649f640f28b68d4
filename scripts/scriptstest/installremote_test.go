package scriptstest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// overlay serves a release tree from disk, with some paths replaced.
type overlay struct {
	dir   string
	files map[string][]byte
}

func (o overlay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b, ok := o.files[r.URL.Path]; ok {
		w.Write(b)
		return
	}
	http.FileServer(http.Dir(o.dir)).ServeHTTP(w, r)
}

func serveTree(t *testing.T, dir string, files map[string][]byte) string {
	t.Helper()
	srv := httptest.NewServer(overlay{dir, files})
	t.Cleanup(srv.Close)
	return srv.URL
}

// runSh runs the shell sh (sh, dash) on script with args, stdin optional,
// in a clean environment.
func runSh(t *testing.T, sh, script string, stdin []byte, args ...string) (string, error) {
	t.Helper()
	var argv []string
	if script != "" {
		argv = append(argv, script)
	}
	cmd := exec.CommandContext(t.Context(), sh, append(argv, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	cmd.Dir = t.TempDir() // not inside a checkout
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var wantInstalled = []string{
	"bin/banger", "bin/banger-vsock-agent", "bin/bangerd",
	"lib/systemd/system/banger-helper.service", "lib/systemd/user/bangerd.service",
	"share/doc/banger/CHANGELOG.md", "share/doc/banger/install.md",
}

// checkInstalled proves the release landed under prefix and runs.
func checkInstalled(t *testing.T, prefix string) {
	t.Helper()
	if got := files(t, prefix); !slices.Equal(got, wantInstalled) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantInstalled, "\n"))
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(prefix, "bin", "banger"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), relVersion) {
		t.Errorf("installed banger version: %v\n%s\nwant it to say %s", err, out, relVersion)
	}
	if got, want := execStart(t, filepath.Join(prefix, "lib/systemd/user/bangerd.service")), prefix+"/bin/bangerd --background"; got != want {
		t.Errorf("bangerd.service ExecStart=%q, want %q", got, want)
	}
	if got, want := execStart(t, filepath.Join(prefix, "lib/systemd/system/banger-helper.service")), prefix+"/bin/bangerd helper"; got != want {
		t.Errorf("banger-helper.service ExecStart=%q, want %q", got, want)
	}
}

func TestInstallShInstallsARelease(t *testing.T) {
	rel := releaseTree(t)
	script := filepath.Join(rel.tree, "install.sh")
	url := serveTree(t, rel.tree, nil)
	scriptBytes := readFile(t, script)
	cases := []struct {
		name  string
		sh    string
		stdin []byte
		args  []string
	}{
		{"sh latest over http", "sh", nil, []string{"--base-url", url}},
		{"piped into sh", "sh", scriptBytes, []string{"-s", "--", "--base-url=" + url, "--version", relVersion}},
		{"file url", "sh", nil, []string{"--base-url", "file://" + rel.tree}},
		{"bash", "bash", nil, []string{"--base-url", url, "--version=" + relVersion}},
	}
	if _, err := exec.LookPath("dash"); err == nil {
		cases = append(cases,
			struct {
				name  string
				sh    string
				stdin []byte
				args  []string
			}{"dash", "dash", nil, []string{"--base-url", url}},
			struct {
				name  string
				sh    string
				stdin []byte
				args  []string
			}{"piped into dash", "dash", scriptBytes, []string{"-s", "--", "--base-url", url}})
	} else {
		t.Log("dash is not installed; the dash cases are left out")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := filepath.Join(t.TempDir(), "prefix")
			s := script
			if tc.stdin != nil {
				s = ""
			}
			out, err := runSh(t, tc.sh, s, tc.stdin, append(tc.args, "--prefix", prefix)...)
			if err != nil {
				t.Fatalf("install: %v\n%s", err, out)
			}
			checkInstalled(t, prefix)
			for _, want := range []string{"Nothing was enabled", "systemctl --user enable --now bangerd", "banger doctor"} {
				if !strings.Contains(out, want) {
					t.Errorf("the next steps lack %q:\n%s", want, out)
				}
			}
			// Installing again over it is fine.
			if out, err := runSh(t, tc.sh, script, nil, "--base-url", url, "--prefix", prefix); err != nil {
				t.Fatalf("second install: %v\n%s", err, out)
			}
			out, err = runSh(t, tc.sh, script, nil, "--uninstall", "--prefix", prefix)
			if err != nil {
				t.Fatalf("uninstall: %v\n%s", err, out)
			}
			if got := files(t, prefix); len(got) != 0 {
				t.Errorf("after --uninstall: %v", got)
			}
		})
	}
}

// repack rewrites the release archive through edit and returns it.
func repack(t *testing.T, archive []byte, edit func(tw *tar.Writer, h *tar.Header, body []byte) bool, extra func(tw *tar.Writer)) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil && edit(tw, h, body) {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	if extra != nil {
		extra(tw)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return buf.Bytes()
}

func addFile(tw *tar.Writer, name string, body []byte) {
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
}

// resigned returns overlay files serving archive under its name, with a
// SHA256SUMS that lists it, signed by the release's key: only the archive
// checks can refuse it.
func resigned(t *testing.T, rel relFixture, archive []byte) map[string][]byte {
	t.Helper()
	name := archiveName(runtime.GOARCH)
	sums := string(readFile(t, filepath.Join(rel.tree, relVersion, "SHA256SUMS")))
	sum := sha256.Sum256(archive)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(sums), "\n") {
		if strings.HasSuffix(l, "  "+name) {
			l = hex.EncodeToString(sum[:]) + "  " + name
		}
		lines = append(lines, l)
	}
	newSums := []byte(strings.Join(lines, "\n") + "\n")
	return map[string][]byte{
		"/" + relVersion + "/" + name:        archive,
		"/" + relVersion + "/SHA256SUMS":     newSums,
		"/" + relVersion + "/SHA256SUMS.sig": rel.key.sign(t, newSums),
	}
}

func TestInstallShRefusesBadReleases(t *testing.T) {
	rel := releaseTree(t)
	script := filepath.Join(rel.tree, "install.sh")
	name := archiveName(runtime.GOARCH)
	archive := readFile(t, filepath.Join(rel.tree, relVersion, name))
	sums := readFile(t, filepath.Join(rel.tree, relVersion, "SHA256SUMS"))
	other := newTestKey(t, t.TempDir(), "other")
	flipped := bytes.Clone(archive)
	flipped[len(flipped)/2] ^= 0xff

	cases := []struct {
		name   string
		script string
		files  map[string][]byte
		args   []string
		want   string
	}{
		{"pinned key against a test-signed tree", filepath.Join(rel.repo, "scripts", "install.sh"), nil, nil, "does not match banger's release key"},
		{"signed by another key", script, map[string][]byte{"/" + relVersion + "/SHA256SUMS.sig": other.sign(t, sums)}, nil, "does not match banger's release key"},
		{"signature not base64", script, map[string][]byte{"/" + relVersion + "/SHA256SUMS.sig": []byte("!!! not base64 !!!\n")}, nil, "refused"},
		{"SHA256SUMS altered", script, map[string][]byte{"/" + relVersion + "/SHA256SUMS": append(bytes.Clone(sums), "0000000000000000000000000000000000000000000000000000000000000000  extra\n"...)}, nil, "does not match banger's release key"},
		{"wrong checksum", script, map[string][]byte{"/" + relVersion + "/" + name: flipped}, nil, "SHA-256"},
		{"truncated archive", script, map[string][]byte{"/" + relVersion + "/" + name: archive[:len(archive)/3]}, nil, "SHA-256"},
		{"extra entry", script, resigned(t, rel, repack(t, archive, nil, func(tw *tar.Writer) { addFile(tw, "evil", []byte("#!/bin/sh\n")) })), nil, "unexpected entry 'evil'"},
		{"entry named like two", script, resigned(t, rel, repack(t, archive, nil, func(tw *tar.Writer) { addFile(tw, "banger bangerd", []byte("#!/bin/sh\n")) })), nil, "unexpected entry 'banger bangerd'"},
		{"entry climbing out", script, resigned(t, rel, repack(t, archive, nil, func(tw *tar.Writer) { addFile(tw, "../banger", []byte("#!/bin/sh\n")) })), nil, "unexpected entry"},
		{"link instead of a binary", script, resigned(t, rel, repack(t, archive, func(tw *tar.Writer, h *tar.Header, _ []byte) bool {
			if h.Name != "bangerd" {
				return false
			}
			tw.WriteHeader(&tar.Header{Name: "bangerd", Typeflag: tar.TypeSymlink, Linkname: "/bin/sh", Mode: 0o777})
			return true
		}, nil)), nil, "not a regular file"},
		{"missing entry", script, resigned(t, rel, repack(t, archive, func(_ *tar.Writer, h *tar.Header, _ []byte) bool { return h.Name == "banger-vsock-agent" }, nil)), nil, "banger-vsock-agent exactly once"},
		{"latest not a version", script, map[string][]byte{"/latest": []byte("v1.2; rm -rf /\n")}, nil, "does not name a version"},
		{"version not published", script, nil, []string{"--version", "v9.9.9"}, "cannot download"},
		{"version without v", script, nil, []string{"--version", "0.0.2"}, "not a version"},
		{"version with leading zero", script, nil, []string{"--version", "v0.01.2"}, "not a version"},
		{"version with a path", script, nil, []string{"--version", "v0.0.2/../x"}, "not a version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := serveTree(t, rel.tree, tc.files)
			parent := t.TempDir()
			prefix := filepath.Join(parent, "prefix")
			out, err := runSh(t, "sh", tc.script, nil, append([]string{"--base-url", url, "--prefix", prefix}, tc.args...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("err %v, output:\n%s\nwant a refusal mentioning %q", err, out, tc.want)
			}
			if got := files(t, parent); len(got) != 0 {
				t.Errorf("a refused install wrote %v", got)
			}
			if _, err := os.Stat(prefix); !os.IsNotExist(err) {
				t.Errorf("a refused install made %s (%v)", prefix, err)
			}
		})
	}
}

// minimalPath is a directory of links to the tools install.sh uses, minus
// the ones left out, to run it as on a host without them.
func minimalPath(t *testing.T, leaveOut ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range []string{"sh", "cat", "mkdir", "mktemp", "cp", "chmod", "mv", "rm", "rmdir", "sed", "grep",
		"dirname", "uname", "head", "tr", "wc", "cut", "awk", "tar", "gzip", "openssl", "curl", "wget", "sha256sum"} {
		if slices.Contains(leaveOut, tool) {
			continue
		}
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed", tool)
		}
		if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// wget stands in for curl, and openssl for sha256sum.
func TestInstallShWithWgetAndWithoutSha256sum(t *testing.T) {
	rel := releaseTree(t)
	url := serveTree(t, rel.tree, nil)
	prefix := filepath.Join(t.TempDir(), "prefix")
	cmd := exec.CommandContext(t.Context(), "sh", filepath.Join(rel.tree, "install.sh"), "--base-url", url, "--prefix", prefix)
	cmd.Env = []string{"PATH=" + minimalPath(t, "curl", "sha256sum"), "HOME=" + t.TempDir()}
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install with wget, without sha256sum: %v\n%s", err, out)
	}
	checkInstalled(t, prefix)

	// The fallback still refuses a flipped archive.
	archive := readFile(t, filepath.Join(rel.tree, relVersion, archiveName(runtime.GOARCH)))
	archive[len(archive)/2] ^= 0xff
	url = serveTree(t, rel.tree, map[string][]byte{"/" + relVersion + "/" + archiveName(runtime.GOARCH): archive})
	prefix2 := filepath.Join(t.TempDir(), "prefix")
	cmd = exec.CommandContext(t.Context(), "sh", filepath.Join(rel.tree, "install.sh"), "--base-url", url, "--prefix", prefix2)
	cmd.Env = []string{"PATH=" + minimalPath(t, "curl", "sha256sum"), "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "SHA-256") {
		t.Errorf("flipped archive without sha256sum: %v\n%s", err, out)
	}
	if _, err := os.Stat(prefix2); !os.IsNotExist(err) {
		t.Errorf("a refused install made %s", prefix2)
	}
}

// A user without root installs into a prefix of their own, reading the
// script from a pipe; into /usr/local they are told to use sudo or
// --prefix, and nothing is written.
func TestInstallShAsAUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the installer as another user (nobody)")
	}
	needTools(t, "setpriv")
	rel := releaseTree(t)
	url := serveTree(t, rel.tree, nil)
	script := readFile(t, filepath.Join(rel.tree, "install.sh"))
	// t.TempDir's parent is 0700: nobody could not reach into it.
	base, err := os.MkdirTemp("", "banger-install-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	home := filepath.Join(base, "home")
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-s", "--"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + home}
		cmd.Dir = home
		cmd.Stdin = bytes.NewReader(script)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	prefix := filepath.Join(home, ".local")
	if out, err := asNobody("--base-url", url, "--prefix", prefix); err != nil {
		t.Fatalf("install as nobody: %v\n%s", err, out)
	}
	checkInstalled(t, prefix)
	rootOwned := filepath.Join(base, "usr-local")
	if err := os.Mkdir(rootOwned, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := asNobody("--base-url", url, "--prefix", rootOwned)
	if err == nil || !strings.Contains(out, "--prefix") {
		t.Errorf("install as nobody into a root-owned prefix: %v\n%s\nwant a refusal naming sudo or --prefix", err, out)
	}
	if got := files(t, rootOwned); len(got) != 0 {
		t.Errorf("a refused install wrote %v", got)
	}
}
