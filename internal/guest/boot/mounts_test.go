package boot

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// envMountsChild makes the test binary run mountsChild instead of the
// tests: it is set for a copy of the binary started in a private mount
// namespace.
const envMountsChild = "BANGER_BOOT_TEST_MOUNTS_ROOT"

// mountsResult is what the child reports.
type mountsResult struct {
	First, Second       Step
	FirstErr, SecondErr string
	Points              []string // mount points under the root after the first run
	ReadOnly            bool     // the root is read-only after the first run
	DevNull             bool     // <root>/dev/null is a character device
	PtmxInPts           bool     // <root>/dev/pts/ptmx exists (a devpts instance)
}

func TestMain(m *testing.M) {
	if root := os.Getenv(envMountsChild); root != "" {
		mountsChild(root)
		return
	}
	os.Exit(m.Run())
}

// mountsChild runs in its own mount namespace: it makes root a read-only
// tmpfs holding only the mount points' parents, runs MountBasics twice and
// prints what it saw as JSON.
func mountsChild(root string) {
	fail := func(what string, err error) {
		os.Stderr.WriteString(what + ": " + err.Error() + "\n")
		os.Exit(3)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"); err != nil {
		fail("mount the test root", err)
	}
	// /proc and /run exist; /sys and /dev are made after the remount.
	for _, d := range []string{"proc", "run"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			fail("mkdir", err)
		}
	}
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		fail("make the test root read-only", err)
	}
	var res mountsResult
	res.First = MountBasics(root, BasicMounts)
	if res.First.Err != nil {
		res.FirstErr = res.First.Err.Error()
		res.First.Err = nil
	}
	points, err := mountPoints(filepath.Join(root, "proc", "self", "mountinfo"))
	if err != nil {
		fail("read the mount table", err)
	}
	for p := range points {
		if strings.HasPrefix(p, root+"/") {
			res.Points = append(res.Points, strings.TrimPrefix(p, root))
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		fail("statfs", err)
	}
	res.ReadOnly = st.Flags&unix.ST_RDONLY != 0
	if fi, err := os.Stat(filepath.Join(root, "dev", "null")); err == nil {
		res.DevNull = fi.Mode()&os.ModeCharDevice != 0
	}
	_, err = os.Stat(filepath.Join(root, "dev", "pts", "ptmx"))
	res.PtmxInPts = err == nil
	res.Second = MountBasics(root, BasicMounts)
	if res.Second.Err != nil {
		res.SecondErr = res.Second.Err.Error()
		res.Second.Err = nil
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fail("encode", err)
	}
}

func TestMountBasics(t *testing.T) {
	testutil.NeedRoot(t, "mount")
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMountsChild+"="+root)
	// A private mount namespace: whatever the child mounts goes away with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		if strings.Contains(stderr, "operation not permitted") || strings.Contains(err.Error(), "operation not permitted") {
			t.Skipf("no mount namespace here: %v %s", err, stderr)
		}
		t.Fatalf("child: %v\n%s", err, stderr)
	}
	var res mountsResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	if res.FirstErr != "" || res.First.Status != StatusDone {
		t.Fatalf("first run: %v (%s)", res.First, res.FirstErr)
	}
	for _, want := range []string{"/proc", "/sys", "/dev", "/dev/pts", "/run"} {
		found := false
		for _, p := range res.Points {
			found = found || p == want
		}
		if !found {
			t.Errorf("%s is not mounted after the first run (mounted: %v)", want, res.Points)
		}
		if !strings.Contains(res.First.Detail, want) {
			t.Errorf("first run's report %q does not list %s", res.First.Detail, want)
		}
	}
	if res.ReadOnly || !strings.Contains(res.First.Detail, "read-write") {
		t.Errorf("the read-only root was not remounted read-write (read-only now: %v; report %q)", res.ReadOnly, res.First.Detail)
	}
	if !res.DevNull || !res.PtmxInPts {
		t.Errorf("/dev/null is a character device: %v; /dev/pts/ptmx exists: %v", res.DevNull, res.PtmxInPts)
	}
	if res.Second.Status != StatusUnchanged || res.SecondErr != "" {
		t.Errorf("second run changed something: %v (%s)", res.Second, res.SecondErr)
	}
}

func TestMountBasicsReportsFailures(t *testing.T) {
	// A mount point that cannot be made fails that mount, not the others.
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "blocker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	step := MountBasics(root, []Mount{{"tmpfs", "/blocker/sub", "tmpfs", 0, ""}})
	if step.Status != StatusFailed || step.Err == nil || !strings.Contains(step.Err.Error(), "create the mount point") {
		t.Fatalf("step = %v, want a failure to create the mount point", step)
	}
}
