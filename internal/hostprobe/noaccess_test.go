package hostprobe

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeRootEnv names the fake root TestKVMNoAccessHelper probes.
const fakeRootEnv = "HOSTPROBE_TEST_FAKE_ROOT"

// TestProbeKVMNoAccessAsNobody shows the permission case where the tests
// run as root: the probe runs again in this test binary as nobody, on a
// fake root whose /dev/kvm is root's alone.
func TestProbeKVMNoAccessAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the probe as another user (TestProbeKVMNoAccess covers a user)")
	}
	f := newFakeRoot(t)
	f.add("dev/kvm", "x")
	if err := os.Chmod(filepath.Join(f.root, "dev/kvm"), 0o600); err != nil {
		t.Fatal(err)
	}
	// nobody must reach the tree and a copy of this test binary (go test
	// keeps the original in a directory of root's alone).
	for d := f.root; d != "/" && d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(f.root, "hostprobe.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestKVMNoAccessHelper$", "-test.v")
	cmd.Env = append(os.Environ(), fakeRootEnv+"="+f.root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Skipf("cannot run the test binary as nobody here (a noexec temp dir?): %v", err)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestKVMNoAccessHelper") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// TestKVMNoAccessHelper is the half of TestProbeKVMNoAccessAsNobody that
// runs as nobody; on its own it does nothing.
func TestKVMNoAccessHelper(t *testing.T) {
	root := os.Getenv(fakeRootEnv)
	if root == "" {
		t.Skip("run by TestProbeKVMNoAccessAsNobody")
	}
	k := ProbeKVM(Host{Root: root, UID: os.Geteuid()})
	if k.State != KVMNoAccess || k.Reason != "/dev/kvm is not usable by this user: permission denied" {
		t.Fatalf("KVMState %+v", k)
	}
}
