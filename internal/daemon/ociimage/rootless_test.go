package ociimage

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// The helper process of TestRootlessImportMatchesRoot: run as an
// unprivileged user, it imports BANGER_ROOTLESS_REF into BANGER_ROOTLESS_DEST.
func init() {
	ref, dest := os.Getenv("BANGER_ROOTLESS_REF"), os.Getenv("BANGER_ROOTLESS_DEST")
	if ref == "" || dest == "" {
		return
	}
	res, err := Import(context.Background(), ref, dest, Options{Insecure: true, Extra: replaceAgent}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "import:", err)
		os.Exit(3)
	}
	if os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "the helper runs as root")
		os.Exit(4)
	}
	fmt.Printf("ok %s warnings=%q\n", res.Digest, res.Warnings)
	os.Exit(0)
}

// replaceAgent does what the daemon's Extra does to a file the image already
// has: remove it and write a new one, root's, 0755.
func replaceAgent(root string) error {
	p := filepath.Join(root, "usr/local/bin/agent")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	_ = os.Remove(p)
	if err := os.WriteFile(p, []byte("banger's agent"), 0o755); err != nil {
		return err
	}
	return os.Chmod(p, 0o755)
}

func blockdev(name string, major, minor int64) ent {
	e := chardev(name, major, minor)
	e.h.Typeflag = tar.TypeBlock
	e.h.Mode = 0o660
	e.h.Gid = 6
	return e
}

// rootlessImage has every kind of metadata a tree written by a user cannot
// carry.
func rootlessImage(t *testing.T) v1.Image {
	l1 := mkTar(t,
		dir("./", 0o755, 0, 0),
		dir("bin/", 0o755, 0, 0),
		file("bin/su", "setuid root", 0o4755, 0, 0),
		file("bin/wall", "setgid tty", 0o2755, 0, 5),
		withXattr(file("bin/ping", "capable", 0o755, 0, 0), "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		withXattr(file("bin/tagged", "user attr", 0o644, 0, 0), "user.banger", "v\x00\xff"),
		dir("home/", 0o755, 0, 0),
		dir("home/app/", 0o750, 1234, 5678),
		file("home/app/data", "the app's", 0o640, 1234, 5678),
		hardlink("home/app/data-link", "home/app/data"),
		symlink("home/app/link", "/bin/su"),
		func() ent { e := symlink("home/app/own-link", "../../bin/su"); e.h.Uid, e.h.Gid = 1234, 5678; return e }(),
		dir("tmp/", 0o1777, 0, 0),
		dir("srv/", 0o2775, 0, 50),
		dir("ro/", 0o555, 0, 0),
		file("ro/secret", "nobody may read", 0o000, 0, 42),
		dir("dev/", 0o755, 0, 0),
		chardev("dev/null", 1, 3),
		blockdev("dev/sda1", 8, 1),
		hardlink("dev/disk-link", "dev/sda1"),
		fifo("dev/initctl"),
		file("gone", "removed by the upper layer", 0o644, 7, 7),
		file("usr/local/bin/agent", "the image's own", 0o4755, 1234, 5678),
		file(`odd name "q" \b`, "x", 0o600, 9, 9),
	)
	l2 := mkTar(t,
		file(".wh.gone", "", 0, 0, 0),
		file("late", "upper layer", 0o4711, 3, 4),
	)
	return buildImage(t, "amd64", v1.Config{}, layerOf(t, l1, compression.GZip), layerOf(t, l2, compression.ZStd))
}

// TestRootlessImportMatchesRoot imports one image as root and as an
// unprivileged user and compares the two ext4 images inode by inode:
// types, owners, modes with their setuid, setgid and sticky bits, device
// numbers, link counts, xattrs, times and contents.
func TestRootlessImportMatchesRoot(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test imports once as root and once as nobody (uid 65534)")
	}
	img := rootlessImage(t)
	reg := startRegistry(t)
	ref := reg.push(t, "test/rootless:1", img)

	// As root, in process.
	rootDest := filepath.Join(t.TempDir(), "root.ext4")
	if _, err := Import(context.Background(), ref, rootDest, Options{Insecure: true, Extra: replaceAgent}, nil); err != nil {
		t.Fatalf("import as root: %v", err)
	}

	// As nobody, in a child of its own: a copy of this test binary, in a
	// directory nobody can reach.
	shared, err := os.MkdirTemp("", "banger-rootless-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shared) })
	out := filepath.Join(shared, "out")
	for _, d := range []string{shared, out} {
		if d != shared {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(out, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "ociimage.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	userDest := filepath.Join(out, "user.ext4")
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = out
	cmd.Env = append(os.Environ(), "BANGER_ROOTLESS_REF="+ref, "BANGER_ROOTLESS_DEST="+userDest,
		"HOME="+out, "DOCKER_CONFIG="+out, "PATH=/usr/local/bin:/usr/bin:/bin") // no sbin: debugfs is found beside mkfs
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	if p, err := exec.LookPath("mkfs.ext4"); err == nil && !strings.HasPrefix(p, "/usr/bin") && !strings.HasPrefix(p, "/bin") {
		cmd.Env = append(cmd.Env, "PATH=/usr/local/bin:/usr/bin:/bin:"+filepath.Dir(p))
	}
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("import as nobody: %v\n%s", err, outb)
	}
	t.Logf("as nobody: %s", strings.TrimSpace(string(outb)))
	if st, err := os.Stat(userDest); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("the user's image: %v", err)
	}
	fsck(t, rootDest)
	fsck(t, userDest)

	want := describeImage(t, rootDest)
	got := describeImage(t, userDest)
	for _, p := range []string{"/bin/su", "/home/app/data", "/dev/null", "/dev/sda1", "/dev/initctl", "/bin/ping", "/ro/secret", "/late", "/usr/local/bin/agent"} {
		if want[p] == "" {
			t.Fatalf("the root image lacks %s: %v", p, want)
		}
	}
	if _, ok := want["/gone"]; ok {
		t.Fatalf("the whiteout did not remove /gone")
	}
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		if want[p] != got[p] {
			t.Errorf("%s differs:\nroot: %s\nuser: %s", p, want[p], got[p])
		}
	}
	// Spot checks that the root image is what the layers say, so both
	// are right and not merely equal.
	for p, w := range map[string]string{
		"/bin/su":              "type=regular mode=04755 uid=0 gid=0",
		"/bin/wall":            "mode=02755 uid=0 gid=5",
		"/home/app/data":       "mode=0640 uid=1234 gid=5678 links=2",
		"/dev/null":            "type=character special mode=0666 uid=0 gid=0 links=1 mtime=6553f100 size=0 dev=01:03",
		"/dev/sda1":            "type=block special mode=0660 uid=0 gid=6 links=2 mtime=6553f100 size=0 dev=08:01",
		"/dev/initctl":         "type=FIFO mode=0620",
		"/tmp":                 "mode=01777",
		"/srv":                 "mode=02775 uid=0 gid=50",
		"/ro/secret":           "mode=0000 uid=0 gid=42",
		"/late":                "mode=04711 uid=3 gid=4",
		"/usr/local/bin/agent": "mode=0755 uid=0 gid=0",
		"/home/app/own-link":   "type=symlink mode=0777 uid=1234 gid=5678",
	} {
		if !strings.Contains(want[p], w) {
			t.Errorf("root image %s = %s; want %s", p, want[p], w)
		}
	}
	for p, w := range map[string]string{"/bin/ping": "security.capability", "/bin/tagged": "user.banger"} {
		if !strings.Contains(want[p], w) {
			t.Errorf("root image %s = %s; want xattr %s", p, want[p], w)
		}
	}
}

var (
	reStatType  = regexp.MustCompile(`Type: ([A-Za-z ]+?)\s+Mode:\s+(\d+)`)
	reStatSize  = regexp.MustCompile(`Size: (\d+)`)
	reStatDev   = regexp.MustCompile(`Device major/minor number: (\d+):(\d+)`)
	reStatXattr = regexp.MustCompile(`(?s)Extended attributes:\n(.*?)\n(?:[A-Z]|$)`)
	reLsP       = regexp.MustCompile(`^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$`)
)

// describeImage lists every path of an ext4 image with what a comparison
// needs, through debugfs (no mount).
func describeImage(t *testing.T, img string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		for _, line := range strings.Split(debugfs(t, img, "ls -p "+dfPath(dir)), "\n") {
			m := reLsP.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil || m[5] == "." || m[5] == ".." {
				continue
			}
			p := path.Join(dir, m[5])
			out[p] = describe(t, img, p)
			if strings.HasPrefix(m[2], "04") {
				walk(p)
			}
		}
	}
	out["/"] = describe(t, img, "/")
	walk("/")
	return out
}

func dfPath(p string) string { q, _ := dfQuote(p); return q }

func describe(t *testing.T, img, p string) string {
	st := stat(t, img, dfPath(p))
	var b strings.Builder
	if m := reStatType.FindStringSubmatch(st.raw); m != nil {
		fmt.Fprintf(&b, "type=%s mode=%s ", m[1], m[2])
	}
	mtime := st.mtime
	if sec, err := strconv.ParseInt(st.mtime, 16, 64); err == nil && sec >= testTime.Unix()+86400 {
		mtime = "(time of the import)" // set while importing: differs between runs
	}
	fmt.Fprintf(&b, "uid=%s gid=%s links=%s mtime=%s", st.uid, st.gid, st.links, mtime)
	if m := reStatSize.FindStringSubmatch(st.raw); m != nil {
		fmt.Fprintf(&b, " size=%s", m[1])
	}
	if m := reStatDev.FindStringSubmatch(st.raw); m != nil {
		fmt.Fprintf(&b, " dev=%s:%s", m[1], m[2])
	}
	if m := reStatXattr.FindStringSubmatch(st.raw); m != nil {
		b.WriteString(" xattrs=" + strings.Join(strings.Fields(m[1]), " "))
	}
	if st.typ == "regular" {
		fmt.Fprintf(&b, " content=%q", catFile(t, img, dfPath(p)))
	}
	return b.String()
}

func TestManifestRefusesWhatDebugfsCannotSay(t *testing.T) {
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "a\nb"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := writeManifest(tree, map[uint64]*inodeMeta{}, filepath.Join(t.TempDir(), "cmds"))
	if err == nil || !strings.Contains(err.Error(), "line break") || !strings.Contains(err.Error(), "root") {
		t.Fatalf("a name with a line break: err = %v, want a refusal saying why and what to do", err)
	}
}

func TestApplyManifestFailsOnAnyDebugfsError(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	cmds := filepath.Join(dir, "cmds")
	if err := os.WriteFile(cmds, []byte("sif / uid 0\nsif \"/missing\" uid 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dfs, _ := exec.LookPath("debugfs")
	err := applyManifest(context.Background(), dfs, cmds, img)
	if err == nil || !strings.Contains(err.Error(), "/missing") {
		t.Fatalf("a failing debugfs command: err = %v, want it reported", err)
	}
}

// An image's xattr names and values go into debugfs's command file. None of
// them may make debugfs run a command of the image's choosing: "-f<path>"
// as a name would be taken for ea_set's option and read a host file into
// the image, and a line longer than debugfs reads at once has its rest run
// as commands of their own (dump writes a host file).
func TestRootlessManifestIsNotDebugfsCommands(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("HOST-SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	written := filepath.Join(host, "written")
	mid := "dump /etc/f " + written
	split := "user." + strings.Repeat("A", 8191-len(`ea_set "/etc/d" "user.`)) + mid + strings.Repeat(" ", 8191-len(mid)) + "B"
	work := t.TempDir()
	root := filepath.Join(work, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	a := newRootlessApplier(root, Limits{})
	layer := mkTar(t,
		dir("etc/", 0o755, 0, 0),
		withXattr(file("etc/f", "image file", 0o644, 0, 0), "-f"+secret, "user.x"),
		withXattr(dir("etc/d/", 0o755, 0, 0), split, "v"),
		withXattr(file("etc/ok", "kept", 0o644, 0, 0), "user.ok", "yes"),
	)
	if err := a.apply(context.Background(), strings.NewReader(string(layer)), "l1"); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := a.freeze(); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(work, "cmds")
	if _, err := writeManifest(root, a.meta, cmds); err != nil {
		t.Fatalf("writeManifest: %v", err)
	}
	img := filepath.Join(work, "img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	dfs, _ := exec.LookPath("debugfs")
	applyErr := applyManifest(context.Background(), dfs, cmds, img)
	if _, err := os.Stat(written); err == nil {
		t.Errorf("debugfs wrote %s on the host: an xattr name ran a command", written)
	}
	if applyErr != nil {
		t.Fatalf("applyManifest: %v", applyErr)
	}
	if got := debugfs(t, img, "ea_list /etc/f"); strings.Contains(got, "HOST-SECRET") {
		t.Errorf("a host file was read into the image: %s", got)
	}
	if got := debugfs(t, img, "ea_get /etc/ok user.ok"); !strings.Contains(got, "yes") {
		t.Errorf("a valid xattr was lost: %s", got)
	}
	if len(a.warnings) != 2 {
		t.Errorf("warnings = %q, want one for each refused name", a.warnings)
	}
}

func TestManifestRefusesLinesDebugfsWouldSplit(t *testing.T) {
	tree := t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Lstat(tree, &st); err != nil {
		t.Fatal(err)
	}
	meta := map[uint64]*inodeMeta{st.Ino: {mode: syscall.S_IFDIR | 0o755, xattrs: []xattr{{"user.big", strings.Repeat("x", 2100)}}}}
	_, err := writeManifest(tree, meta, filepath.Join(t.TempDir(), "cmds"))
	if err == nil || !strings.Contains(err.Error(), "import as root") {
		t.Fatalf("a 2100-byte xattr value: err = %v, want a refusal", err)
	}
}

// debugfs's mknod takes numbers up to 65535 and answers a larger minor (Linux
// has 20 bits of it) with a bare usage line.
func TestManifestRefusesDeviceNumbersDebugfsCannotMake(t *testing.T) {
	tree := t.TempDir()
	p := filepath.Join(tree, "dev")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	meta := map[uint64]*inodeMeta{st.Ino: {mode: syscall.S_IFCHR | 0o600, rdev: unix.Mkdev(10, 70000), ctime: st.Ctim.Nano()}}
	_, err := writeManifest(tree, meta, filepath.Join(t.TempDir(), "cmds"))
	if err == nil || !strings.Contains(err.Error(), "/dev is 10:70000") || !strings.Contains(err.Error(), "import as root") {
		t.Fatalf("minor 70000: err = %v, want a refusal naming the node", err)
	}
}
