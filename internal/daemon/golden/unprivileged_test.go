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
	"strconv"
	"strings"
	"syscall"
	"testing"

	"banger/internal/imagecat"
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
		cat, err := imagecat.Load()
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

func (printProgress) Phase(s string)         { fmt.Fprintln(os.Stderr, "phase:", s) }
func (printProgress) SetTotal(int64, string) {}
func (printProgress) Add(int64)              {}

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
		"/var/log/journal":                   "directory 02755 0 101", // may differ by package; logged
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
}
