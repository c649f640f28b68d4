package scriptstest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"banger/internal/catalog"
	"banger/internal/daemon/bundle"
)

// repoRoot is the top of the checkout; go test runs in scripts/scriptstest.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "publish-kernel.sh")); err != nil {
		t.Fatalf("cannot find the checkout's scripts from %s: %v", root, err)
	}
	return root
}

// needTools skips the test when the scripts cannot run here.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed; the publishing scripts need it (apt-get install %s)", tool, tool)
		}
	}
	if slices.Contains(tools, "tar") {
		out, err := exec.Command("tar", "--version").Output()
		if err != nil || !bytes.Contains(out, []byte("GNU tar")) {
			t.Skip("tar is not GNU tar; the publishing scripts need its --sort and --sparse options")
		}
	}
}

type result struct {
	stdout, stderr string
	err            error
}

// runScript runs a script of the checkout with a clean publishing
// environment: no SOURCE_DATE_EPOCH and no BANGER_PUBLISH_DEST.
func runScript(t *testing.T, script string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{filepath.Join(repoRoot(t), "scripts", script)}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") && !strings.HasPrefix(kv, "BANGER_PUBLISH_DEST=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

func mustRun(t *testing.T, script string, args ...string) result {
	t.Helper()
	r := runScript(t, script, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// published is what a publish script reports.
type published struct {
	path   string
	sha256 string
	size   int64
}

func parseReport(t *testing.T, out string) published {
	t.Helper()
	var p published
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "bundle":
			p.path = val
		case "sha256":
			p.sha256 = val
		case "size":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				t.Fatalf("size line %q: %v", sc.Text(), err)
			}
			p.size = n
		}
	}
	if p.path == "" || p.sha256 == "" || p.size == 0 {
		t.Fatalf("the report lacks bundle, sha256 or size:\n%s", out)
	}
	return p
}

// checkFile proves the report describes the file on disk.
func checkFile(t *testing.T, p published) {
	t.Helper()
	data, err := os.ReadFile(p.path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != p.sha256 {
		t.Errorf("printed sha256 %s, but the file's is %s", p.sha256, got)
	}
	if int64(len(data)) != p.size {
		t.Errorf("printed size %d, but the file has %d bytes", p.size, len(data))
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// guardRepoCatalogs fails the test if the checkout's own catalogs change.
func guardRepoCatalogs(t *testing.T) {
	t.Helper()
	root := repoRoot(t)
	paths := []string{
		filepath.Join(root, "internal", "catalog", "images.json"),
		filepath.Join(root, "internal", "catalog", "kernels.json"),
	}
	before := map[string][]byte{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		before[p] = data
	}
	t.Cleanup(func() {
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(data, before[p]) {
				t.Errorf("the checkout's %s was changed by a script under test", p)
			}
		}
	})
}

// fetchInto unpacks a published bundle with banger's own fetcher.
func fetchInto(t *testing.T, p published) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "unpacked")
	if _, err := bundle.Fetch(t.Context(), bundle.Source{URL: "file://" + p.path, SHA256: p.sha256, Size: p.size}, dest, nil); err != nil {
		t.Fatalf("bundle.Fetch of %s: %v", p.path, err)
	}
	return dest
}

// treeFiles lists the regular files under dir (relative, sorted), leaving
// out the fetcher's marker.
func treeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() != bundle.MarkerName {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func sameBytes(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatalf("unpacked bundle lacks %s: %v", filepath.Base(got), err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s after the round trip", got, want)
	}
}

func readManifest(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, data)
	}
	for _, k := range []string{"name", "built_by", "date"} {
		if m[k] == "" {
			t.Errorf("manifest.json has no %s: %s", k, data)
		}
	}
	return m
}

func fakeKernelDir(t *testing.T, withModules bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kernel")
	writeFile(t, filepath.Join(dir, "vmlinux"), bytes.Repeat([]byte("\x7fELF fake kernel "), 300))
	writeFile(t, filepath.Join(dir, "initrd.img"), []byte("fake initrd\n"))
	if withModules {
		writeFile(t, filepath.Join(dir, "modules", "6.1.0-test", "modules.order"), []byte("kernel/drivers/virtio/virtio_mmio.ko\n"))
	}
	return dir
}

func TestPublishKernelRoundTrip(t *testing.T) {
	needTools(t, "bash", "jq", "zstd", "tar")
	guardRepoCatalogs(t)
	root := repoRoot(t)
	kdir := fakeKernelDir(t, true)
	cat := filepath.Join(t.TempDir(), "kernels.json")
	copyFile(t, filepath.Join(root, "internal", "catalog", "kernels.json"), cat)
	out := t.TempDir()

	p := parseReport(t, mustRun(t, "publish-kernel.sh", "debian-6.1-amd64", out, "--from-dir", kdir, "--catalog", cat).stdout)
	if want := filepath.Join(out, "debian-6.1-amd64-6.1.0-test.tar.zst"); p.path != want {
		t.Errorf("bundle written to %s, want %s", p.path, want)
	}
	checkFile(t, p)

	data, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Parse(catalog.Kernels, data)
	if err != nil {
		t.Fatalf("the patched kernel catalog does not parse: %v\n%s", err, data)
	}
	e, ok := c.Lookup("debian-6.1-amd64")
	if !ok {
		t.Fatal("the patched catalog lost debian-6.1-amd64")
	}
	want := catalog.Bundle{URL: "kernels/debian-6.1-amd64-6.1.0-test.tar.zst", SHA256: p.sha256, Size: p.size}
	if e.Bundle == nil || *e.Bundle != want {
		t.Errorf("catalog bundle = %+v, want %+v", e.Bundle, want)
	}
	if e.Build == nil || e.Build.Kind != "apt-kernel" || e.Version != "6.1" {
		t.Errorf("patching changed the rest of the entry: %+v", e)
	}

	dest := fetchInto(t, p)
	if got, want := treeFiles(t, dest), []string{"initrd.img", "manifest.json", "modules/6.1.0-test/modules.order", "vmlinux"}; !slices.Equal(got, want) {
		t.Errorf("bundle holds %v, want %v", got, want)
	}
	for _, f := range []string{"vmlinux", "initrd.img", "modules/6.1.0-test/modules.order"} {
		sameBytes(t, filepath.Join(kdir, f), filepath.Join(dest, f))
	}
	m := readManifest(t, filepath.Join(dest, "manifest.json"))
	if m["name"] != "debian-6.1-amd64" || m["release"] != "6.1.0-test" {
		t.Errorf("manifest = %v, want name debian-6.1-amd64 and release 6.1.0-test", m)
	}

	// The same inputs give the same bundle, byte for byte.
	again := parseReport(t, mustRun(t, "publish-kernel.sh", "debian-6.1-amd64", t.TempDir(), "--from-dir", kdir, "--catalog", cat).stdout)
	if again.sha256 != p.sha256 || again.size != p.size {
		t.Errorf("second run gave sha256 %s size %d, first %s size %d", again.sha256, again.size, p.sha256, p.size)
	}
}

func TestPublishKernelAddsMissingEntry(t *testing.T) {
	needTools(t, "bash", "jq", "zstd", "tar")
	guardRepoCatalogs(t)
	kdir := fakeKernelDir(t, false)
	cat := filepath.Join(t.TempDir(), "kernels.json")
	copyFile(t, filepath.Join(repoRoot(t), "internal", "catalog", "kernels.json"), cat)

	p := parseReport(t, mustRun(t, "publish-kernel.sh", "fc-generic", t.TempDir(), "--from-dir", kdir,
		"--release", "6.1.99", "--description", "Generic Firecracker kernel", "--catalog", cat).stdout)
	checkFile(t, p)
	data, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Parse(catalog.Kernels, data)
	if err != nil {
		t.Fatalf("the patched kernel catalog does not parse: %v\n%s", err, data)
	}
	if _, ok := c.Lookup("debian-6.1-amd64"); !ok {
		t.Error("adding an entry lost debian-6.1-amd64")
	}
	e, ok := c.Lookup("fc-generic")
	if !ok {
		t.Fatalf("fc-generic was not added:\n%s", data)
	}
	if e.Version != "6.1.99" || e.Arch != "x86_64" || e.Description != "Generic Firecracker kernel" ||
		e.Bundle == nil || e.Bundle.SHA256 != p.sha256 || e.Bundle.Size != p.size {
		t.Errorf("added entry = %+v (bundle %+v)", e, e.Bundle)
	}
	if got := treeFiles(t, fetchInto(t, p)); !slices.Equal(got, []string{"initrd.img", "manifest.json", "vmlinux"}) {
		t.Errorf("bundle holds %v", got)
	}
}

func TestPublishKernelBadInputChangesNothing(t *testing.T) {
	needTools(t, "bash", "jq", "zstd", "tar")
	guardRepoCatalogs(t)
	orig, err := os.ReadFile(filepath.Join(repoRoot(t), "internal", "catalog", "kernels.json"))
	if err != nil {
		t.Fatal(err)
	}
	noVmlinux := fakeKernelDir(t, true)
	if err := os.Remove(filepath.Join(noVmlinux, "vmlinux")); err != nil {
		t.Fatal(err)
	}
	twoReleases := fakeKernelDir(t, true)
	writeFile(t, filepath.Join(twoReleases, "modules", "6.2.0-other", "modules.order"), nil)

	cases := []struct {
		name, wantErr string
		args          []string
	}{
		{"no vmlinux", "vmlinux", []string{"debian-6.1-amd64", "OUT", "--from-dir", noVmlinux}},
		{"two releases", "--release", []string{"debian-6.1-amd64", "OUT", "--from-dir", twoReleases}},
		{"no modules and no release", "--release", []string{"debian-6.1-amd64", "OUT", "--from-dir", fakeKernelDir(t, false)}},
		{"new entry without description", "--description", []string{"brand-new", "OUT", "--from-dir", fakeKernelDir(t, true)}},
		{"bad name", "not a valid catalog name", []string{"Bad_Name", "OUT", "--from-dir", fakeKernelDir(t, true)}},
		{"no --from-dir", "--from-dir", []string{"debian-6.1-amd64", "OUT"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cat := filepath.Join(t.TempDir(), "kernels.json")
			writeFile(t, cat, orig)
			out := filepath.Join(t.TempDir(), "out")
			args := slices.Clone(tc.args)
			args[1] = out
			r := runScript(t, "publish-kernel.sh", append(args, "--catalog", cat)...)
			if r.err == nil {
				t.Fatalf("succeeded on bad input:\n%s", r.stdout)
			}
			if !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("error %q does not mention %q", r.stderr, tc.wantErr)
			}
			if data, _ := os.ReadFile(cat); !bytes.Equal(data, orig) {
				t.Errorf("the catalog changed on bad input:\n%s", data)
			}
			if matches, _ := filepath.Glob(filepath.Join(out, "*")); len(matches) > 0 {
				t.Errorf("bad input left files behind: %v", matches)
			}
		})
	}
}

// fakeRootfs is a sparse 4 MiB file that passes the ext4 superblock check
// and has a few non-zero blocks between long runs of zeros.
func fakeRootfs(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rootfs.ext4")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	writes := map[int64][]byte{
		1080:     {0x53, 0xef},
		64 << 10: bytes.Repeat([]byte("inode table "), 100),
		3 << 20:  []byte("a file's data near the end"),
	}
	for off, b := range writes {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPublishGoldenImageRoundTrip(t *testing.T) {
	needTools(t, "bash", "jq", "zstd", "tar", "od")
	guardRepoCatalogs(t)
	root := repoRoot(t)
	rootfs := fakeRootfs(t)
	cat := filepath.Join(t.TempDir(), "images.json")
	copyFile(t, filepath.Join(root, "internal", "catalog", "images.json"), cat)
	out := t.TempDir()

	p := parseReport(t, mustRun(t, "publish-golden-image.sh", out, "--from-rootfs", rootfs, "--catalog", cat, "--version", "12-test").stdout)
	if want := filepath.Join(out, "debian-bookworm-12-test.tar.zst"); p.path != want {
		t.Errorf("bundle written to %s, want %s", p.path, want)
	}
	checkFile(t, p)

	data, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Parse(catalog.Images, data)
	if err != nil {
		t.Fatalf("the patched image catalog does not parse: %v\n%s", err, data)
	}
	e, ok := c.Lookup("debian-bookworm")
	if !ok {
		t.Fatal("the patched catalog lost debian-bookworm")
	}
	want := catalog.Bundle{URL: "images/debian-bookworm-12-test.tar.zst", SHA256: p.sha256, Size: p.size}
	if e.Bundle == nil || *e.Bundle != want {
		t.Errorf("catalog bundle = %+v, want %+v", e.Bundle, want)
	}
	if e.Build == nil || e.Build.Kind != "debootstrap" || e.Kernel != "debian-6.1-amd64" {
		t.Errorf("patching changed the rest of the entry: %+v", e)
	}

	dest := fetchInto(t, p)
	if got := treeFiles(t, dest); !slices.Equal(got, []string{"manifest.json", "rootfs.ext4"}) {
		t.Errorf("bundle holds %v, want manifest.json and rootfs.ext4", got)
	}
	sameBytes(t, rootfs, filepath.Join(dest, "rootfs.ext4"))
	m := readManifest(t, filepath.Join(dest, "manifest.json"))
	if m["name"] != "debian-bookworm" || m["kernel"] != "debian-6.1-amd64" {
		t.Errorf("manifest = %v, want name debian-bookworm and kernel debian-6.1-amd64", m)
	}

	again := parseReport(t, mustRun(t, "publish-golden-image.sh", t.TempDir(), "--from-rootfs", rootfs, "--catalog", cat, "--version", "12-test").stdout)
	if again.sha256 != p.sha256 || again.size != p.size {
		t.Errorf("second run gave sha256 %s size %d, first %s size %d", again.sha256, again.size, p.sha256, p.size)
	}
}

func TestPublishGoldenImageRefusesNonExt4(t *testing.T) {
	needTools(t, "bash", "jq", "zstd", "tar", "od")
	guardRepoCatalogs(t)
	orig, err := os.ReadFile(filepath.Join(repoRoot(t), "internal", "catalog", "images.json"))
	if err != nil {
		t.Fatal(err)
	}
	cat := filepath.Join(t.TempDir(), "images.json")
	writeFile(t, cat, orig)
	notExt4 := filepath.Join(t.TempDir(), "rootfs.ext4")
	writeFile(t, notExt4, bytes.Repeat([]byte{1}, 8192))
	out := filepath.Join(t.TempDir(), "out")

	for _, args := range [][]string{
		{out, "--from-rootfs", notExt4},
		{out},
		{out, "--from-rootfs", fakeRootfs(t), "--build"},
		{out, "--from-rootfs", fakeRootfs(t), "--name", "no-such-image"},
	} {
		r := runScript(t, "publish-golden-image.sh", append(args, "--catalog", cat)...)
		if r.err == nil {
			t.Errorf("%v: succeeded on bad input:\n%s", args, r.stdout)
		}
		if !strings.Contains(r.stderr, "publish-golden-image:") {
			t.Errorf("%v: no error message: %q", args, r.stderr)
		}
	}
	if data, _ := os.ReadFile(cat); !bytes.Equal(data, orig) {
		t.Errorf("the catalog changed on bad input:\n%s", data)
	}
	if matches, _ := filepath.Glob(filepath.Join(out, "*")); len(matches) > 0 {
		t.Errorf("bad input left files behind: %v", matches)
	}
}

func TestMakeGenericKernelDryRun(t *testing.T) {
	needTools(t, "bash")
	out := filepath.Join(t.TempDir(), "kernel-out")
	r := mustRun(t, "make-generic-kernel.sh", out, "--dry-run")
	lines := strings.Split(r.stdout, "\n")
	for _, want := range []string{
		"CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y", "CONFIG_VIRTIO_BLK=y",
		"CONFIG_VIRTIO_NET=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_VSOCKETS=y", "CONFIG_EXT4_FS=y",
		"CONFIG_DEVTMPFS=y", "CONFIG_SERIAL_8250_CONSOLE=y", "# CONFIG_MODULES is not set",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("dry run does not print %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "build dependencies") {
		t.Errorf("dry run does not report the build dependencies:\n%s", r.stdout)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a dry run created OUTDIR")
	}

	// A source tarball that does not exist is refused, even in a dry run.
	if r := runScript(t, "make-generic-kernel.sh", out, "--dry-run", "--source", filepath.Join(t.TempDir(), "none.tar.xz")); r.err == nil ||
		!strings.Contains(r.stderr, "does not exist") {
		t.Errorf("a missing --source was not refused: err %v, stderr %q", r.err, r.stderr)
	}
}

func TestShellcheck(t *testing.T) {
	needTools(t, "shellcheck")
	scripts := filepath.Join(repoRoot(t), "scripts")
	var args []string
	for _, s := range []string{"bundle-lib.sh", "publish-golden-image.sh", "publish-kernel.sh", "make-generic-kernel.sh",
		"install.sh", "publish-banger-release.sh", "release-lib.sh", "release-dry-run.sh"} {
		args = append(args, filepath.Join(scripts, s))
	}
	cmd := exec.CommandContext(t.Context(), "shellcheck", append([]string{"-x", "--severity=warning"}, args...)...)
	cmd.Dir = filepath.Dir(scripts)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
