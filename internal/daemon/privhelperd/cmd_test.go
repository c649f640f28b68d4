package privhelperd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// syncBuffer is a log sink that the helper and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir is a temp dir with a path short enough for a Unix socket.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bgh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// TestRunServesUntilCancelled runs the helper command in-process inside a
// network namespace and drives it with the real client.
func TestRunServesUntilCancelled(t *testing.T) {
	needNetRoot(t)
	ns, nsPath := testNS(t)
	h := nsHandle(t, ns)
	dir := shortDir(t)
	sock := filepath.Join(dir, "run", "helper.sock")
	allow := filepath.Join(dir, "helper-users")
	if err := os.WriteFile(allow, []byte("# banger users\nroot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// systemd's side of sd_notify.
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--allow", allow, "--subnet-range", "10.200.0.0/16"}, runEnv{stderr: logs, netns: nsPath, sysctlDir: t.TempDir()})
	}()

	// A deadline only so that a broken helper fails the test instead of
	// hanging it.
	_ = notify.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 256)
	n, err := notify.Read(buf)
	if err != nil {
		t.Fatalf("no READY from the helper: %v\n%s", err, logs)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}

	c := privhelper.Client{Socket: sock}
	v, err := c.Hello(ctx)
	if err != nil || v.Version != buildinfo.Version {
		t.Fatalf("hello: %+v, %v", v, err)
	}
	nw := netSpec("banger5", "10.200.5.0/24")
	if err := c.EnsureNetwork(ctx, nw); err != nil {
		t.Fatalf("ensure_network: %v\n%s", err, logs)
	}
	br, err := h.LinkByName("banger5")
	if err != nil || br.Type() != "bridge" || br.Attrs().Alias != "banger uid=0" {
		t.Fatalf("bridge banger5 in the namespace: %v, %+v", err, br)
	}
	if !slices.Contains(nftTables(t, ns), "banger-banger5") {
		t.Fatalf("no nftables table banger-banger5 in the namespace: %q", nftTables(t, ns))
	}
	if got := ipForward(t, ns); got != "1" {
		t.Errorf("ip_forward after ensure_network is %q, want 1", got)
	}
	if err := c.CreateTap(ctx, nw, "bgtap5"); err != nil {
		t.Fatalf("create_tap: %v", err)
	}
	if tap, err := h.LinkByName("bgtap5"); err != nil || tap.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("tap bgtap5 on the bridge: %v", err)
	}
	pub := privops.Publish{VMID: "5a", HostPort: 18085, Guest: netip.MustParseAddrPort("10.200.5.2:80")}
	if err := c.Publish(ctx, nw, pub); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if r := findRule(nftRules(t, ns, false), "publish tcp/18085 vm=5a to=10.200.5.2:80 uid=0"); r == "" {
		t.Fatalf("no published port in %q", nftRules(t, ns, false))
	}
	if err := c.Unpublish(ctx, nw, "5a", 0); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if r := findRule(nftRules(t, ns, false), "publish tcp/18085"); r != "" {
		t.Fatalf("unpublish left %q", r)
	}
	// Snapshots on a host without device-mapper: the reason comes back,
	// and there are none to list.
	if !kernelHasDM(t) {
		if err := c.SnapshotsAvailable(ctx); !errors.Is(err, privhelper.ErrSnapshotsUnavailable) || !strings.Contains(err.Error(), "device-mapper") {
			t.Errorf("snapshots_available: %v, want privhelper.ErrSnapshotsUnavailable with the reason", err)
		}
		if l, err := c.ListSnapshots(ctx); err != nil || len(l) != 0 {
			t.Errorf("list_snapshots: %v, %v", l, err)
		}
	}
	// Refusals: a subnet outside the range, an interface that is not banger's.
	var he *privhelper.Error
	err = c.EnsureNetwork(ctx, netSpec("banger6", "192.168.77.0/24"))
	if !errors.As(err, &he) || he.Code != privhelper.CodeDenied {
		t.Errorf("ensure_network outside the range: %v, want denied", err)
	}
	err = c.DeleteTap(ctx, nw, "eth0")
	if !errors.As(err, &he) || he.Code != privhelper.CodeDenied {
		t.Errorf("delete_tap eth0: %v, want denied", err)
	}
	if _, err := h.LinkByName("banger6"); err == nil {
		t.Error("a refused request made a bridge")
	}
	if err := c.TeardownNetwork(ctx, nw); err != nil {
		t.Fatalf("teardown_network: %v", err)
	}
	for _, name := range []string{"banger5", "bgtap5"} {
		if _, err := h.LinkByName(name); err == nil {
			t.Errorf("%s left after teardown_network", name)
		}
	}
	if ts := nftTables(t, ns); len(ts) != 0 {
		t.Errorf("nftables tables left after teardown_network: %q", ts)
	}
	if got := ipForward(t, ns); got != "0" {
		t.Errorf("ip_forward after the last teardown_network is %q, want 0 as it was", got)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("helper exited %d\n%s", code, logs)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after stop: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "helper request done") || !strings.Contains(l, "op=ensure_network") || !strings.Contains(l, "op=delete_tap") {
		t.Errorf("logs do not record the requests:\n%s", l)
	}
}

// TestRunRefusesBadSetup checks that bad flags and a missing allow list stop
// the helper before it listens, with a message saying what to do.
func TestRunRefusesBadSetup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as non-root every run stops at the root check (TestMainRefusesNonRoot covers it)")
	}
	dir := shortDir(t)
	sock := filepath.Join(dir, "helper.sock")
	allow := filepath.Join(dir, "users")
	if err := os.WriteFile(allow, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing allow file", []string{"--socket", sock, "--allow", filepath.Join(dir, "nope")}, 1, "create it"},
		{"unknown user", []string{"--socket", sock, "--allow", writeAllow(t, dir, "no-such-user-banger\n")}, 1, "no-such-user-banger"},
		{"bad range", []string{"--socket", sock, "--allow", allow, "--subnet-range", "10.200.0.1/16"}, 1, "--subnet-range"},
		{"relative socket", []string{"--socket", "helper.sock", "--allow", allow}, 1, "not an absolute path"},
		{"unknown flag", []string{"--exec", "sh"}, 2, "flag provided but not defined"},
		{"argument", []string{"--allow", allow, "extra"}, 2, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), tc.args, runEnv{stderr: &out})
			if code != tc.code || !strings.Contains(out.String(), tc.want) {
				t.Errorf("exit %d, output %q; want exit %d mentioning %q", code, out.String(), tc.code, tc.want)
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Errorf("a refused start left %s: %v", sock, err)
			}
		})
	}
}

func writeAllow(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "allow-"+strings.TrimSpace(content))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMainProcess is not a test: it is Main in a child process of
// TestMainRefusesNonRoot.
func TestMainProcess(t *testing.T) {
	if os.Getenv("BANGER_HELPER_MAIN") == "" {
		t.Skip("run only as a child process of TestMainRefusesNonRoot")
	}
	os.Exit(Main(strings.Fields(os.Getenv("BANGER_HELPER_MAIN_ARGS"))))
}

// TestMainRefusesNonRoot runs Main as user nobody: it must exit non-zero
// with a message that says it needs root, before touching the socket.
func TestMainRefusesNonRoot(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "helper.sock")
	args := "--socket " + sock + " --allow " + filepath.Join(dir, "users")
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "helper.test")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(bin, "-test.run=^TestMainProcess$")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(exe, "-test.run=^TestMainProcess$")
	}
	cmd.Env = []string{"BANGER_HELPER_MAIN=1", "BANGER_HELPER_MAIN_ARGS=" + args}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("Main as non-root: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "must run as root") || !strings.Contains(string(out), "systemctl start banger-helper") {
		t.Errorf("the refusal does not explain itself:\n%s", out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("non-root Main made %s", sock)
	}
}
