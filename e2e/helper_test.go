//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/testutil/bangerenv"
)

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUserDaemonThroughHelper runs bangerd as an unprivileged user inside a
// network namespace, with `bangerd helper` running as root beside it. The
// user's VM gets a tap on the bridge (owned by the user), NAT and a
// published port, all made by the helper; after rm, nothing is left. The
// user is made for the test and removed after it.
func TestUserDaemonThroughHelper(t *testing.T) {
	base := start(t)
	testutil.NeedRoot(t, "make a user, a namespace and run the helper")
	if r := bangerenv.Need("ip", "useradd", "userdel", "setpriv", "nft"); r != "" {
		t.Skip(r)
	}
	f := newUserFixture(t, base)
	w, uid := f.w, f.uid

	out := w.Must(t, "doctor")
	if !strings.Contains(out, "the helper on "+f.sock+" answers") {
		t.Errorf("doctor does not see the helper:\n%s", out)
	}
	w.Must(t, "-q", "kernel", "import", "--name", "k", w.deb)
	w.Must(t, "image", "register", "img", "--rootfs", w.image, "--kernel", "k")
	w.Must(t, "-q", "vm", "run", "img", "--name", "uvm", "-p", "8089:8080", "--", "true")
	defer w.CLI("vm", "rm", "-f", "uvm")

	if pid := w.DaemonPID(); pid > 0 {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(st), fmt.Sprintf("\nUid:\t%d\t", uid)) {
			t.Fatalf("bangerd is not running as uid %d:\n%s", uid, st)
		}
	}
	var insp struct{ Network, IP, Tap string }
	if err := json.Unmarshal([]byte(w.Must(t, "vm", "inspect", "uvm", "-o", "json")), &insp); err != nil {
		t.Fatal(err)
	}
	if insp.Network != "bridge" || !strings.HasPrefix(insp.IP, "10.200.0.") || insp.Tap == "" {
		t.Fatalf("VM is not on the bridge: %+v", insp)
	}
	owner, err := exec.Command("ip", "netns", "exec", f.ns, "cat", "/sys/class/net/"+insp.Tap+"/owner").Output()
	if err != nil || strings.TrimSpace(string(owner)) != strconv.Itoa(uid) {
		t.Errorf("tap %s owner = %q (%v), want uid %d", insp.Tap, owner, err, uid)
	}
	// A user's bangerd cannot change uid: its QEMU runs as the user, under
	// the same seccomp filter, and attached to the tap through the
	// descriptor bangerd opened.
	if pids := vmProcesses(w.Runtime); len(pids) != 1 {
		t.Errorf("%d QEMU processes of the user's VM, want 1", len(pids))
	} else if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0])); err != nil ||
		!strings.Contains(string(st), fmt.Sprintf("\nUid:\t%d\t%d\t", uid, uid)) || !strings.Contains(string(st), "\nSeccomp:\t2\n") {
		t.Errorf("the user's QEMU is not confined as it should be (uid %d, Seccomp 2): %v\n%s", uid, err, st)
	}
	checkUserVMNetwork(t, f, insp.IP)

	w.Must(t, "vm", "rm", "-f", "uvm")
	assertNetnsClean(t, f.ns)
	if !strings.Contains(f.hlog.String(), "helper request done") {
		t.Errorf("the helper logged no request:\n%s", f.hlog.String())
	}
}

// checkUserVMNetwork checks, from inside the user's VM, the gateway and DNS
// the helper set up, and from the namespace the port it published.
func checkUserVMNetwork(t *testing.T, f *userFixture, ip string) {
	t.Helper()
	w := f.w
	w.Must(t, "vm", "exec", "uvm", "--", "sh", "-c", "mkdir -p /www && echo via-helper > /www/index.html && httpd -p 8080 -h /www")
	if out := w.Must(t, "vm", "exec", "uvm", "--", "ping", "-c", "1", "-W", "3", "10.200.0.1"); !strings.Contains(out, "1 packets received") {
		t.Errorf("guest cannot reach the gateway: %s", out)
	}
	// The user's bangerd answers DNS on a high port; the helper's rule
	// brings the guest's queries to port 53 there.
	if out, code := w.CLI("vm", "exec", "uvm", "--", "nslookup", "uvm.banger"); code != 0 || !strings.Contains(out, ip) {
		t.Errorf("guest cannot resolve uvm.banger through the gateway: exit %d\n%s", code, out)
	}
	if got, err := fetchInNS(f.ns, 8089, "via-helper"); err != nil {
		t.Errorf("published port 8089: %q, %v", got, err)
	}
}

// userFixture is a user made for the test, a network namespace, the helper
// running as root in it for that user, and a banger env of that user
// bridged in the namespace through the helper.
type userFixture struct {
	w        *env
	ns, sock string
	uid      int
	hlog     *testutil.SyncBuffer // the helper's output
}

func newUserFixture(t *testing.T, base *env) *userFixture {
	t.Helper()
	suffix := fmt.Sprint(os.Getpid() % 100000)
	f := &userFixture{ns: "bgu" + suffix}
	name := "bge2e" + suffix
	root := testutil.ShortDir(t, "bgu")
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(root, "home")
	uid, gid := makeUser(t, name, home)
	f.uid = uid

	sh(t, "ip", "netns", "add", f.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", f.ns).Run() })
	sh(t, "ip", "-n", f.ns, "link", "set", "lo", "up")

	// Everything the user runs or reads lives where the user can reach it.
	pub := filepath.Join(root, "pub")
	bin := filepath.Join(pub, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		copyFile(t, filepath.Join(base.Bin, b), filepath.Join(bin, b), 0o755)
	}
	deb := filepath.Join(pub, filepath.Base(base.deb))
	copyFile(t, base.deb, deb, 0o644)
	image := filepath.Join(pub, "test.ext4")
	copyFile(t, base.image, image, 0o644)

	f.sock, f.hlog = startHelper(t, f.ns, filepath.Join(bin, "bangerd"), root, name)

	urun := filepath.Join(root, "urun")
	if err := os.MkdirAll(urun, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig + "network = \"bridge\"\nhosts_file = \"\"\nhelper_socket = \"" + f.sock + "\"\n"
	w, err := newEnv(bin, home, urun, cfg, f.ns)
	if err != nil {
		t.Fatal(err)
	}
	w.asUser, w.deb, w.image = []int{uid, gid}, deb, image
	// A VMM running as a user opens /dev/net/tun to attach to its tap.
	// Hosts usually have it 0666; where it is 0600 (as on some CI
	// machines), banger gets a 0666 node of its own in a private mount
	// namespace, so the host's stays as it is.
	if st, err := os.Stat("/dev/net/tun"); err == nil && st.Mode().Perm()&0o006 != 0o006 {
		node := filepath.Join(root, "tun")
		sh(t, "mknod", "-m", "0666", node, "c", "10", "200")
		w.tunNode = node
	}
	sh(t, "chown", "-R", fmt.Sprintf("%d:%d", uid, gid), home, urun)
	t.Cleanup(func() { w.StopDaemon() })
	f.w = w
	return f
}

// makeUser adds a system user called name with its home, removed when the
// test ends, and returns its uid and gid.
func makeUser(t *testing.T, name, home string) (uid, gid int) {
	t.Helper()
	sh(t, "useradd", "--system", "--user-group", "--home-dir", home, "--create-home", "--shell", "/usr/sbin/nologin", name)
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// startHelper runs `bangerd helper` as root in the namespace ns, serving
// only the user called name, until the test ends, and returns its socket
// and its output. On failure the output's notable lines are logged.
func startHelper(t *testing.T, ns, bangerd, root, name string) (string, *testutil.SyncBuffer) {
	t.Helper()
	run := filepath.Join(root, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	allow := filepath.Join(root, "helper-users")
	if err := os.WriteFile(allow, []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "helper.sock")
	helper := exec.Command("ip", "netns", "exec", ns, bangerd, "helper", "--socket", sock, "--allow", allow)
	hlog := &testutil.SyncBuffer{}
	helper.Stdout, helper.Stderr = hlog, hlog
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = helper.Process.Signal(os.Interrupt)
		_ = helper.Wait()
		if t.Failed() {
			// Only what is not routine, so that the failure above stays in
			// view at the end of a long CI log.
			var notable []string
			for _, l := range strings.Split(hlog.String(), "\n") {
				if l != "" && !strings.Contains(l, "level=INFO") {
					notable = append(notable, l)
				}
			}
			t.Logf("helper log, without its INFO lines (%d lines in all):\n%s", strings.Count(hlog.String(), "\n"), strings.Join(notable, "\n"))
		}
	})
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sock, hlog
}
