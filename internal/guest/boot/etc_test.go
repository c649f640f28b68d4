package boot

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// testEnv points every path Apply touches into a temporary directory, and
// makes setting the host name an error so that no test changes the host's.
func testEnv(t *testing.T) Env {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"etc", "root", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return Env{
		EtcDir:      filepath.Join(dir, "etc"),
		RootHome:    filepath.Join(dir, "root"),
		ReadyFile:   filepath.Join(dir, "run", "banger", "ready"),
		MountInfo:   filepath.Join(dir, "no-mountinfo"),
		SysDir:      filepath.Join(dir, "no-sys"),
		DevDir:      filepath.Join(dir, "no-dev"),
		SetHostname: func(string) error { return os.ErrPermission },
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func stepOf(t *testing.T, rep Report, duty string) Step {
	t.Helper()
	s, ok := rep.Step(duty)
	if !ok {
		t.Fatalf("report has no %s step:\n%s", duty, rep)
	}
	return s
}

func TestApplyDNSReplacesSymlinkAndIsIdempotent(t *testing.T) {
	env := testEnv(t)
	stub := filepath.Join(env.EtcDir, "stub-resolv.conf")
	if err := os.WriteFile(stub, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(env.EtcDir, "resolv.conf")
	if err := os.Symlink(stub, resolv); err != nil {
		t.Fatal(err)
	}
	s := Settings{DNS: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::53")}}
	rep, err := Apply(context.Background(), s, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutyDNS); st.Status != StatusDone || !strings.Contains(st.Detail, "symlink") {
		t.Fatalf("dns step = %v", st)
	}
	fi, err := os.Lstat(resolv)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("resolv.conf should now be a 0644 file: %v %v", fi.Mode(), err)
	}
	got := readFile(t, resolv)
	if !strings.Contains(got, "nameserver 10.0.0.1\nnameserver fd00::53\n") {
		t.Fatalf("resolv.conf = %q", got)
	}
	if readFile(t, stub) != "nameserver 127.0.0.53\n" {
		t.Fatal("the symlink's target was written through")
	}
	rep, err = Apply(context.Background(), s, env)
	if err != nil {
		t.Fatal(err)
	}
	if st := stepOf(t, rep, DutyDNS); st.Status != StatusUnchanged {
		t.Fatalf("second apply: dns step = %v, want unchanged", st)
	}
	if readFile(t, resolv) != got {
		t.Fatal("second apply changed resolv.conf")
	}
}

func TestApplySSHKeysMergesAndIsIdempotent(t *testing.T) {
	env := testEnv(t)
	sshDir := filepath.Join(env.RootHome, ".ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		t.Fatal(err)
	}
	existing := newKeyLine(t, "someone-else")
	k1 := newKeyLine(t, "banger")
	k2 := newKeyLine(t, "second")
	// The file lacks a final newline, has a comment, and already holds k2
	// under another comment.
	k2Fields := strings.Fields(k2)
	old := "# managed by hand\n" + existing + "\n" + k2Fields[0] + " " + k2Fields[1] + " old-comment"
	keysFile := filepath.Join(sshDir, "authorized_keys")
	if err := os.WriteFile(keysFile, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Settings{SSHKeys: []string{k1, k2}}
	rep, err := Apply(context.Background(), s, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutySSHKeys); st.Status != StatusDone || !strings.HasPrefix(st.Detail, "1 of 2") {
		t.Fatalf("ssh-keys step = %v", st)
	}
	got := readFile(t, keysFile)
	if want := old + "\n" + k1 + "\n"; got != want {
		t.Fatalf("authorized_keys =\n%s\nwant\n%s", got, want)
	}
	for path, perm := range map[string]os.FileMode{sshDir: 0o700, keysFile: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s mode = %v, want %v", path, fi.Mode().Perm(), perm)
		}
		if os.Geteuid() == 0 {
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s owned by %d:%d, want root", path, st.Uid, st.Gid)
			}
		}
	}
	rep, err = Apply(context.Background(), s, env)
	if err != nil {
		t.Fatal(err)
	}
	if st := stepOf(t, rep, DutySSHKeys); st.Status != StatusUnchanged {
		t.Fatalf("second apply: ssh-keys step = %v, want unchanged", st)
	}
	if readFile(t, keysFile) != got {
		t.Fatal("second apply changed authorized_keys")
	}
}

func TestApplySSHKeysRejectsInvalidOnesByIndex(t *testing.T) {
	env := testEnv(t)
	good := newKeyLine(t, "good")
	s := Settings{SSHKeys: []string{good, "ssh-rsa not-a-key", good + "\n" + newKeyLine(t, "smuggled")}}
	rep, err := Apply(context.Background(), s, env)
	if err == nil {
		t.Fatal("Apply accepted invalid keys")
	}
	for _, want := range []string{"banger.ssh_key #2", "banger.ssh_key #3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "#1") {
		t.Errorf("error %q blames the good key", err)
	}
	if st := stepOf(t, rep, DutySSHKeys); st.Status != StatusFailed {
		t.Fatalf("ssh-keys step = %v, want failed", st)
	}
	got := readFile(t, filepath.Join(env.RootHome, ".ssh", "authorized_keys"))
	if got != good+"\n" {
		t.Fatalf("authorized_keys = %q, want only the good key", got)
	}
	// The ready marker is written even though a duty failed.
	if !Ready(env.ReadyFile) {
		t.Fatal("no ready marker after Apply")
	}
}

func TestEnsureHostsLine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "127.0.1.1\tweb\n"},
		{"127.0.0.1\tlocalhost\n::1\tlocalhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tweb\n::1\tlocalhost\n"},
		{"127.0.0.1 localhost\n127.0.1.1 old old.lan\n10.0.0.5 db\n", "127.0.0.1 localhost\n127.0.1.1\tweb\n10.0.0.5 db\n"},
		{"127.0.1.1 web.lan web # mine", "127.0.1.1 web.lan web # mine\n"},
		{"# 127.0.1.1 web\n10.0.0.5 db", "# 127.0.1.1 web\n10.0.0.5 db\n127.0.1.1\tweb\n"},
	}
	for _, c := range cases {
		if got := EnsureHostsLine(c.in, "web"); got != c.want {
			t.Errorf("EnsureHostsLine(%q) = %q, want %q", c.in, got, c.want)
		}
		if again := EnsureHostsLine(c.want, "web"); again != c.want {
			t.Errorf("EnsureHostsLine is not idempotent on %q: %q", c.want, again)
		}
	}
}

func TestApplyHostnameFilesWithHook(t *testing.T) {
	env := testEnv(t)
	var set []string
	env.SetHostname = func(n string) error { set = append(set, n); return nil }
	hosts := filepath.Join(env.EtcDir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n192.168.1.9 printer\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	s := Settings{Hostname: "box-7"}
	if rep, err := Apply(context.Background(), s, env); err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if got := readFile(t, filepath.Join(env.EtcDir, "hostname")); got != "box-7\n" {
		t.Fatalf("hostname file = %q", got)
	}
	wantHosts := "127.0.0.1 localhost\n127.0.1.1\tbox-7\n192.168.1.9 printer\n"
	if got := readFile(t, hosts); got != wantHosts {
		t.Fatalf("hosts = %q, want %q", got, wantHosts)
	}
	if fi, _ := os.Stat(hosts); fi.Mode().Perm() != 0o640 {
		t.Fatalf("hosts mode changed to %v", fi.Mode().Perm())
	}
	rep, err := Apply(context.Background(), s, env)
	if err != nil {
		t.Fatal(err)
	}
	if st := stepOf(t, rep, DutyHostname); st.Status != StatusUnchanged {
		t.Fatalf("second apply: hostname step = %v, want unchanged", st)
	}
	if readFile(t, hosts) != wantHosts || len(set) != 2 || set[1] != "box-7" {
		t.Fatalf("second apply: hosts %q, set %q", readFile(t, hosts), set)
	}
}

func TestApplyHostnameInUTSNamespace(t *testing.T) {
	testutil.NeedRoot(t, "unshare a UTS namespace")
	env := testEnv(t)
	env.SetHostname = nil // the real unix.Sethostname, inside the namespace
	type result struct {
		rep     Report
		err     error
		kernel  string
		skipped string
	}
	done := make(chan result, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine and
		// takes the namespace with it, so no other goroutine sees it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			done <- result{skipped: "cannot unshare a UTS namespace: " + err.Error()}
			return
		}
		rep, err := Apply(context.Background(), Settings{Hostname: "guest-uts"}, env)
		var uts unix.Utsname
		if uerr := unix.Uname(&uts); uerr != nil {
			err = uerr
		}
		done <- result{rep: rep, err: err, kernel: unix.ByteSliceToString(uts.Nodename[:])}
	}()
	r := <-done
	if r.skipped != "" {
		t.Skip(r.skipped)
	}
	if r.err != nil {
		t.Fatalf("Apply: %v\n%s", r.err, r.rep)
	}
	if r.kernel != "guest-uts" {
		t.Fatalf("host name in the namespace = %q, want guest-uts", r.kernel)
	}
	if host, _ := os.Hostname(); host == "guest-uts" {
		t.Fatal("the test changed the host's own name")
	}
	if got := readFile(t, filepath.Join(env.EtcDir, "hosts")); !strings.Contains(got, "127.0.1.1\tguest-uts\n") || !strings.Contains(got, "localhost") {
		t.Fatalf("hosts = %q", got)
	}
}

func TestApplySkipsWhatIsNotAskedAndHonoursContext(t *testing.T) {
	env := testEnv(t)
	rep, err := Apply(context.Background(), Settings{}, env)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{DutyHostname, DutyNetwork, DutyDNS, DutySSHKeys, DutyGrow} {
		if st := stepOf(t, rep, d); st.Status != StatusSkipped {
			t.Errorf("%s = %v, want skipped", d, st)
		}
	}
	if st := stepOf(t, rep, DutyReady); st.Status != StatusDone || !Ready(env.ReadyFile) {
		t.Fatalf("ready = %v", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err = Apply(ctx, Settings{DNS: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, env)
	if err == nil || len(rep.Failed()) != 5 {
		t.Fatalf("cancelled Apply: err %v, report\n%s", err, rep)
	}
	if _, statErr := os.Stat(filepath.Join(env.EtcDir, "resolv.conf")); statErr == nil {
		t.Fatal("a cancelled Apply wrote resolv.conf")
	}
}
