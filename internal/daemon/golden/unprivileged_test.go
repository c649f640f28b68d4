package golden

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"banger/internal/catalog"
	"banger/internal/progress"
)

func TestCheckUnprivilegedSaysWhatToDo(t *testing.T) {
	u := &user.User{Username: "ana", Uid: "1001"}
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	all := func(string) (string, error) { return "/usr/bin/x", nil }
	none := func(string) (string, error) { return "", errors.New("not found") }
	onlyMM := func(n string) (string, error) {
		if n == "mmdebstrap" {
			return "/usr/bin/mmdebstrap", nil
		}
		return "", errors.New("not found")
	}
	good := write("subuid", "bob:100000:65536\nana:165536:65536\n")
	byUID := write("subuid-uid", "1001:165536:65536\n")
	small := write("subuid-small", "ana:165536:1000\n")
	other := write("subuid-other", "bob:100000:65536\n")

	cases := []struct {
		name        string
		look        func(string) (string, error)
		uid, gid    string
		want, want2 string
	}{
		{"nothing installed", none, good, good, "apt-get install mmdebstrap uidmap", "run bangerd as root"},
		{"no uidmap", onlyMM, good, good, "apt-get install uidmap", "newuidmap"},
		{"no subuids", all, other, good, "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ana", "it has 0"},
		{"too few subgids", all, good, small, "65536 subordinate ids for ana in " + small, "it has 1000"},
		{"no subuid file", all, filepath.Join(dir, "missing"), good, "usermod", "pull a published bundle"},
	}
	for _, c := range cases {
		_, err := checkUnprivileged(c.look, c.uid, c.gid, u)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.want2) {
			t.Errorf("%s: err = %v; want it to say %q and %q", c.name, err, c.want, c.want2)
		}
	}
	for _, f := range []string{good, byUID} {
		if p, err := checkUnprivileged(all, f, f, u); err != nil || p != "/usr/bin/x" {
			t.Errorf("all there (%s): %q, %v", f, p, err)
		}
	}
}

// The helper process of TestBuildWithoutRoot: as the unprivileged user, it
// builds the catalog's default image into BANGER_GOLDEN_ROOTLESS_DIR.
func init() {
	dir := os.Getenv("BANGER_GOLDEN_ROOTLESS_DIR")
	if dir == "" {
		return
	}
	err := func() error {
		cat, err := catalog.LoadImages()
		if err != nil {
			return err
		}
		e, ok := cat.Lookup("debian-bookworm")
		if !ok {
			return errors.New("no debian-bookworm in the catalog")
		}
		agent := filepath.Join(dir, "agent")
		if err := os.WriteFile(agent, []byte("#!/bin/sh\n# stands in for the agent\n"), 0o755); err != nil {
			return err
		}
		return Build(context.Background(), e, dir, Options{Agent: agent}, printProgress{})
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

type printProgress struct{}

func (printProgress) Phase(s string)                { fmt.Fprintln(os.Stderr, "phase:", s) }
func (printProgress) SetTotal(int64, progress.Unit) {}
func (printProgress) Add(int64)                     {}

// TestBuildWithoutRoot builds the default image as an unprivileged user with
// mmdebstrap and checks the owners and modes a user's tree cannot carry. It
// downloads a Debian system, so it runs only when asked.
func TestBuildWithoutRoot(t *testing.T) {
	name := os.Getenv("BANGER_TEST_ROOTLESS_USER")
	if name == "" {
		t.Skip("set BANGER_TEST_ROOTLESS_USER to a user with 65536 subordinate ids (mmdebstrap and uidmap installed); the test downloads a Debian system")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the build as BANGER_TEST_ROOTLESS_USER")
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	shared, err := os.MkdirTemp("", "banger-golden-rootless-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shared) })
	dir := filepath.Join(shared, "build")
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "golden.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BANGER_GOLDEN_ROOTLESS_DIR="+dir, "HOME="+dir, "USER="+name, "LOGNAME="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build as %s: %v\n%s", name, err, out)
	}
	img := filepath.Join(dir, "rootfs.ext4")
	re := regexp.MustCompile(`Type: ([a-z ]+?)\s+Mode:\s+(\d+).*?\n(?s:.*?)User:\s+(\d+)\s+Group:\s+(\d+)`)
	for p, want := range map[string]string{
		"/usr/bin/passwd":                    "regular 04755 0 0",
		"/usr/bin/chage":                     "regular 02755 0 42", // setgid shadow
		"/usr/bin/sudo":                      "regular 04755 0 0",
		"/tmp":                               "directory 01777 0 0",
		"/usr/local/bin/banger-vsock-agent":  "regular 0755 0 0",
		"/etc/ssh/sshd_config.d/banger.conf": "regular 0644 0 0",
	} {
		o, err := exec.Command("debugfs", "-R", "stat "+p, img).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs stat %s: %v %s", p, err, o)
		}
		m := re.FindStringSubmatch(string(o))
		if m == nil {
			t.Errorf("%s: no stat: %s", p, o)
			continue
		}
		got := strings.Join(m[1:], " ")
		if got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	if o, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, o)
	}
	if os.Getenv("BANGER_TEST_ROOTLESS_COMPARE") == "" {
		return
	}
	// The same recipe built as root with debootstrap: every path both
	// images have must have the same type, mode and owner.
	rootDir := filepath.Join(shared, "root-build")
	if err := os.Mkdir(rootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.LoadImages()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cat.Lookup("debian-bookworm")
	agent := filepath.Join(dir, "agent")
	if err := Build(context.Background(), e, rootDir, Options{Agent: agent}, nil); err != nil {
		t.Fatalf("root build: %v", err)
	}
	want := listImage(t, filepath.Join(rootDir, "rootfs.ext4"))
	got := listImage(t, img)
	// Left alone: files the two bootstrappers make differently.
	for _, p := range []string{"/etc/machine-id", "/var/cache/apt/archives/partial", "/var/lib/apt/lists/partial"} {
		delete(want, p)
		delete(got, p)
	}
	var same, differ int
	var onlyRoot, onlyUser []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			onlyRoot = append(onlyRoot, p)
		case g != w:
			differ++
			t.Errorf("%s: root build %s, user build %s", p, w, g)
		default:
			same++
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			onlyUser = append(onlyUser, p)
		}
	}
	sort.Strings(onlyRoot)
	sort.Strings(onlyUser)
	t.Logf("%d paths with the same type, mode and owner; %d differ; %d only in the root build (%s), %d only in the user build (%s)",
		same, differ, len(onlyRoot), sample(onlyRoot), len(onlyUser), sample(onlyUser))
}

func sample(ps []string) string {
	if len(ps) > 12 {
		return strings.Join(ps[:12], " ") + " …"
	}
	return strings.Join(ps, " ")
}

var reLsP = regexp.MustCompile(`^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$`)

// listImage maps every path of an ext4 image to "mode user group", owners
// by name from the image's own passwd and group files (the two
// bootstrappers install packages in different orders, so system ids
// differ), reading one directory level per debugfs run.
func listImage(t *testing.T, img string) map[string]string {
	t.Helper()
	users, groups := idNames(t, img, "/etc/passwd"), idNames(t, img, "/etc/group")
	name := func(names map[string]string, id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}
	out := map[string]string{}
	level := []string{"/"}
	for len(level) > 0 {
		var cmds strings.Builder
		for _, d := range level {
			fmt.Fprintf(&cmds, "ls -p \"%s\"\n", strings.ReplaceAll(d, `"`, `""`))
		}
		f := filepath.Join(t.TempDir(), "cmds")
		if err := os.WriteFile(f, []byte(cmds.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := exec.Command("debugfs", "-f", f, img).Output()
		if err != nil {
			t.Fatalf("debugfs ls: %v", err)
		}
		var next []string
		cur := ""
		for _, line := range strings.Split(string(o), "\n") {
			if c, ok := strings.CutPrefix(line, "debugfs: ls -p "); ok {
				cur = strings.ReplaceAll(strings.Trim(c, `"`), `""`, `"`)
				continue
			}
			m := reLsP.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil || m[5] == "." || m[5] == ".." {
				continue
			}
			p := filepath.Join(cur, m[5])
			out[p] = m[2] + " " + name(users, m[3]) + " " + name(groups, m[4])
			if strings.HasPrefix(m[2], "04") {
				next = append(next, p)
			}
		}
		level = next
	}
	return out
}

// idNames maps the ids of an image's passwd or group file to their names.
func idNames(t *testing.T, img, file string) map[string]string {
	t.Helper()
	o, err := exec.Command("debugfs", "-R", "cat "+file, img).Output()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(o), "\n") {
		if f := strings.Split(l, ":"); len(f) >= 3 {
			m[f[2]] = f[0]
		}
	}
	return m
}
