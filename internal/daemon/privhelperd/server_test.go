package privhelperd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privhelperd"
	"banger/internal/daemon/privops"
)

// nobody is the second user of these tests; a client runs as nobody
// through a copy of the test binary (see TestMain).
const nobody = 65534

// createCall is what one CreateSnapshot got, read while it ran.
type createCall struct {
	uid                  uint32
	name, origin, cow    string // the arguments as the executor got them
	originReal, cowReal  string // the files those name, by the kernel
	originMode, cowMode  int    // O_ACCMODE of the open files
	cowSize              int64  // the size asked for
	cowSizeNow, cowOwner int64  // the COW file's size and owner at the time
}

// recorder is an Executor that records what reached it: each call as
// "uid=N op args", and each CreateSnapshot in detail.
type recorder struct {
	mu      sync.Mutex
	calls   []string
	creates []createCall

	snaps       []privops.Snapshot // what ListSnapshots answers
	unavailable error              // what SnapshotsAvailable answers
	createErr   error              // what CreateSnapshot fails with
	onCreate    func()             // runs inside CreateSnapshot
}

func (r *recorder) For(uid uint32) privops.Ops { return &recOps{r: r, uid: uid} }

func (r *recorder) add(uid uint32, format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("uid=%d ", uid)+fmt.Sprintf(format, a...))
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) createCalls() []createCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]createCall(nil), r.creates...)
}

type recOps struct {
	r   *recorder
	uid uint32
}

func spec(n privops.NetSpec) string {
	return fmt.Sprintf("%s %s %s %s", n.Bridge, n.Subnet, n.TapPrefix, n.Table)
}

func (o *recOps) EnsureNetwork(_ context.Context, n privops.NetSpec) error {
	o.r.add(o.uid, "ensure_network %s", spec(n))
	return nil
}

func (o *recOps) TeardownNetwork(_ context.Context, n privops.NetSpec) error {
	o.r.add(o.uid, "teardown_network %s", spec(n))
	return nil
}

func (o *recOps) CreateTap(_ context.Context, n privops.NetSpec, tap string) error {
	o.r.add(o.uid, "create_tap %s %s", spec(n), tap)
	return nil
}

func (o *recOps) DeleteTap(_ context.Context, n privops.NetSpec, tap string) error {
	o.r.add(o.uid, "delete_tap %s %s", spec(n), tap)
	return nil
}

func (o *recOps) Publish(_ context.Context, n privops.NetSpec, p privops.Publish) error {
	o.r.add(o.uid, "publish %s %s %d %s", spec(n), p.VMID, p.HostPort, p.Guest)
	return nil
}

func (o *recOps) Unpublish(_ context.Context, n privops.NetSpec, vmID string, hostPort uint16) error {
	o.r.add(o.uid, "unpublish %s %s %d", spec(n), vmID, hostPort)
	return nil
}

func (o *recOps) SnapshotsAvailable(context.Context) error {
	o.r.add(o.uid, "snapshots_available")
	return o.r.unavailable
}

// accMode reads the access mode of the open file /proc/self/fd/N from
// /proc/self/fdinfo/N.
func accMode(fdPath string) int {
	b, err := os.ReadFile(strings.Replace(fdPath, "/fd/", "/fdinfo/", 1))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return -1
			}
			return int(n) & unix.O_ACCMODE
		}
	}
	return -1
}

func (o *recOps) CreateSnapshot(_ context.Context, name, origin, cowFile string, cowSize int64) (privops.Snapshot, error) {
	c := createCall{uid: o.uid, name: name, origin: origin, cow: cowFile, cowSize: cowSize,
		originMode: accMode(origin), cowMode: accMode(cowFile), cowSizeNow: -1, cowOwner: -1}
	c.originReal, _ = os.Readlink(origin)
	c.cowReal, _ = os.Readlink(cowFile)
	if st, err := os.Stat(cowFile); err == nil {
		c.cowSizeNow = st.Size()
		c.cowOwner = int64(st.Sys().(*syscall.Stat_t).Uid)
	}
	o.r.mu.Lock()
	o.r.creates = append(o.r.creates, c)
	hook, err := o.r.onCreate, o.r.createErr
	o.r.mu.Unlock()
	o.r.add(o.uid, "create_snapshot %s", name)
	if hook != nil {
		hook()
	}
	if err != nil {
		return privops.Snapshot{}, err
	}
	return privops.Snapshot{Name: name, Device: "/dev/mapper/" + name, Origin: origin, COWFile: cowFile, Sectors: 4096}, nil
}

func (o *recOps) RemoveSnapshot(_ context.Context, name string) error {
	o.r.add(o.uid, "remove_snapshot %s", name)
	return nil
}

func (o *recOps) ListSnapshots(context.Context) ([]privops.Snapshot, error) {
	o.r.add(o.uid, "list_snapshots")
	o.r.mu.Lock()
	defer o.r.mu.Unlock()
	return append([]privops.Snapshot(nil), o.r.snaps...), nil
}

// clientResult is what the client process prints: the answer, or the
// helper's refusal, or another error.
type clientResult struct {
	Resp privhelper.Response
	Code string
	Msg  string
	Err  string
}

// TestMain lets the test binary act as a client running as another user:
// with PRIVHELPER_TEST_CLIENT set it sends the request in
// PRIVHELPER_TEST_REQUEST to that socket and prints a clientResult.
func TestMain(m *testing.M) {
	if sock := os.Getenv("PRIVHELPER_TEST_CLIENT"); sock != "" {
		os.Exit(clientMain(sock, os.Getenv("PRIVHELPER_TEST_REQUEST")))
	}
	os.Exit(m.Run())
}

func clientMain(sock, reqJSON string) int {
	var req privhelper.Request
	if err := json.Unmarshal([]byte(reqJSON), &req); err != nil {
		fmt.Fprintf(os.Stderr, "client: bad request %q: %v\n", reqJSON, err)
		return 4
	}
	// A bound only so that a broken helper fails the test instead of
	// hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := privhelper.Client{Socket: sock}.Do(ctx, req)
	out := clientResult{Resp: resp}
	var e *privhelper.Error
	if errors.As(err, &e) {
		out.Code, out.Msg = e.Code, e.Msg
	} else if err != nil {
		out.Err = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 4
	}
	return 0
}

type fixture struct {
	sock  string
	dir   string            // the socket's dir, 0755
	state map[uint32]string // what Policy.StateDir answers
	real  map[uint32]string // the same dirs with symlinks resolved
	rec   *recorder
	bin   string // a copy of the test binary that nobody may run
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user and to give files to other uids")
	}
}

// serve runs a helper with policy and a recorder on a real socket until
// the test ends. Root's state dir is reached through a symlink, as a home
// dir may be; nobody's (made only when running as root) belongs to nobody.
func serve(t *testing.T, policy privhelperd.Policy) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	f := &fixture{sock: filepath.Join(dir, "helper.sock"), dir: dir, rec: &recorder{},
		state: map[uint32]string{}, real: map[uint32]string{}}
	f.real[self()] = filepath.Join(base, "state-self")
	f.state[self()] = filepath.Join(base, "state-link")
	if err := os.MkdirAll(f.real[self()], 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.real[self()], f.state[self()]); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		d := filepath.Join(base, "state-nobody")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		f.state[nobody], f.real[nobody] = d, d
	}
	if policy.StateDir == nil {
		policy.StateDir = func(uid uint32) (string, error) {
			if d, ok := f.state[uid]; ok {
				return d, nil
			}
			return "", fmt.Errorf("no state dir for uid %d in this test", uid)
		}
	}
	ln, err := privhelperd.Listen(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&privhelperd.Server{Policy: policy, Exec: f.rec, Version: "test"}).Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func (f *fixture) client() privhelper.Client { return privhelper.Client{Socket: f.sock} }

func (f *fixture) do(t *testing.T, r privhelper.Request) (privhelper.Response, error) {
	t.Helper()
	// A bound only so that a broken helper fails the test instead of
	// hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.client().Do(ctx, r)
}

// asNobody sends r from a process running as nobody.
func (f *fixture) asNobody(t *testing.T, r privhelper.Request) (privhelper.Response, error) {
	t.Helper()
	needRoot(t)
	if f.bin == "" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		f.bin = filepath.Join(f.dir, "client.test")
		if err := os.WriteFile(f.bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	req, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(f.bin)
	cmd.Env = []string{"PRIVHELPER_TEST_CLIENT=" + f.sock, "PRIVHELPER_TEST_REQUEST=" + string(req)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as nobody: %v\n%s", err, stderr.String())
	}
	var res clientResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client as nobody printed %q: %v", out, err)
	}
	switch {
	case res.Code != "":
		return res.Resp, &privhelper.Error{Code: res.Code, Msg: res.Msg}
	case res.Err != "":
		return res.Resp, errors.New(res.Err)
	}
	return res.Resp, nil
}

func wantCode(t *testing.T, err error, code, text string) {
	t.Helper()
	var e *privhelper.Error
	if !errors.As(err, &e) || e.Code != code || !strings.Contains(e.Msg, text) {
		t.Fatalf("err = %v, want %s containing %q", err, code, text)
	}
}

func (f *fixture) wantNoCalls(t *testing.T) {
	t.Helper()
	if calls := f.rec.list(); len(calls) != 0 {
		t.Fatalf("refused requests reached the executor: %q", calls)
	}
}

func self() uint32 { return uint32(os.Getuid()) }

func bounded(t *testing.T) context.Context {
	// A bound only so that a broken helper fails the test instead of
	// hanging it.
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// theNet is a network the default policy allows.
var theNet = privops.NetSpec{Bridge: "banger3", Subnet: netip.MustParsePrefix("10.200.3.0/24"), TapPrefix: "bgtap", Table: netmgr.TableFor("banger3")}

// netReq is a request on theNet.
func netReq(op string) privhelper.Request {
	return privhelper.Request{Op: op, Bridge: theNet.Bridge, Subnet: theNet.Subnet.String(), TapPrefix: theNet.TapPrefix, Table: theNet.Table}
}

// mkfile writes a file of size bytes (sparse), making its dir.
func mkfile(t *testing.T, path string, size int64) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAllowedRequestsReachTheExecutor(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	c, cx := f.client(), bounded(t)
	if v, err := c.Hello(cx); err != nil || v.Version != "test" || v.StateDir != f.real[self()] {
		t.Fatalf("Hello = %+v, %v; want version test and state dir %s", v, err, f.real[self()])
	}
	own := privops.Snapshot{Name: "banger-own", Device: "/dev/mapper/banger-own", COWFile: filepath.Join(f.real[self()], "vms", "a", "root.cow")}
	f.rec.snaps = []privops.Snapshot{own}
	guest := netip.MustParseAddrPort("10.200.3.2:8080")
	steps := []struct {
		name string
		do   func() error
	}{
		{"ensure", func() error { return c.EnsureNetwork(cx, theNet) }},
		{"create tap", func() error { return c.CreateTap(cx, theNet, "bgtap1a2b") }},
		// The caller is root here: a privileged port is allowed.
		{"publish 80", func() error { return c.Publish(cx, theNet, privops.Publish{VMID: "1a2b", HostPort: 80, Guest: guest}) }},
		{"publish", func() error {
			return c.Publish(cx, theNet, privops.Publish{VMID: "1a2b", HostPort: 18080, Guest: guest})
		}},
		{"unpublish", func() error { return c.Unpublish(cx, theNet, "1a2b", 18080) }},
		{"unpublish all", func() error { return c.Unpublish(cx, theNet, "1a2b", 0) }},
		{"delete tap", func() error { return c.DeleteTap(cx, theNet, "bgtap1a2b") }},
		{"teardown", func() error { return c.TeardownNetwork(cx, theNet) }},
		{"snapshots available", func() error { return c.SnapshotsAvailable(cx) }},
		{"list", func() error {
			l, err := c.ListSnapshots(cx)
			if err == nil && (len(l) != 1 || l[0] != own) {
				err = fmt.Errorf("listed %+v, want [%+v]", l, own)
			}
			return err
		}},
		{"remove", func() error { return c.RemoveSnapshot(cx, "banger-own") }},
		{"remove missing", func() error { return c.RemoveSnapshot(cx, "banger-gone") }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	n := fmt.Sprintf("uid=%d ", self())
	nw := spec(theNet)
	want := []string{
		n + "ensure_network " + nw,
		n + "create_tap " + nw + " bgtap1a2b",
		n + "publish " + nw + " 1a2b 80 10.200.3.2:8080",
		n + "publish " + nw + " 1a2b 18080 10.200.3.2:8080",
		n + "unpublish " + nw + " 1a2b 18080",
		n + "unpublish " + nw + " 1a2b 0",
		n + "delete_tap " + nw + " bgtap1a2b",
		n + "teardown_network " + nw,
		n + "snapshots_available",
		n + "list_snapshots",
		n + "list_snapshots", n + "remove_snapshot banger-own",
		n + "list_snapshots", n + "remove_snapshot banger-gone",
	}
	if got := f.rec.list(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("executor saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSnapshotsUnavailableReasonReachesTheCaller(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	f.rec.unavailable = errors.New("no device-mapper in this kernel")
	err := f.client().SnapshotsAvailable(bounded(t))
	if !errors.Is(err, privhelper.ErrSnapshotsUnavailable) || !strings.Contains(err.Error(), "no device-mapper in this kernel") {
		t.Fatalf("SnapshotsAvailable = %v, want ErrSnapshotsUnavailable with the helper's reason", err)
	}
}

func TestNetworkRefusals(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	with := func(op string, change func(*privhelper.Request)) privhelper.Request {
		r := netReq(op)
		change(&r)
		return r
	}
	E, CT, DT, P, U := privhelper.OpEnsureNetwork, privhelper.OpCreateTap, privhelper.OpDeleteTap, privhelper.OpPublish, privhelper.OpUnpublish
	pub := func(change func(*privhelper.Request)) privhelper.Request {
		return with(P, func(r *privhelper.Request) {
			r.VMID, r.HostPort, r.Guest = "1a2b", 18080, "10.200.3.2:8080"
			change(r)
		})
	}
	denied, invalid := privhelper.CodeDenied, privhelper.CodeInvalid
	cases := []struct {
		name string
		req  privhelper.Request
		code string
		text string
	}{
		{"foreign bridge", with(E, func(r *privhelper.Request) { r.Bridge, r.Table = "docker0", netmgr.TableFor("docker0") }), denied, `bridge "docker0" is not banger's`},
		{"foreign bridge on teardown", with(privhelper.OpTeardownNetwork, func(r *privhelper.Request) { r.Bridge, r.Table = "virbr0", netmgr.TableFor("virbr0") }), denied, `bridge "virbr0" is not banger's`},
		{"bridge name too long", with(E, func(r *privhelper.Request) { r.Bridge = "banger0123456789"; r.Table = netmgr.TableFor(r.Bridge) }), invalid, "longer than 15"},
		{"bridge name chars", with(E, func(r *privhelper.Request) { r.Bridge = "banger/x"; r.Table = netmgr.TableFor(r.Bridge) }), invalid, "has '/'"},
		{"foreign tap", with(CT, func(r *privhelper.Request) { r.Tap = "eth0" }), denied, `tap "eth0" is not banger's: its name must start with "bgtap"`},
		{"foreign tap on delete", with(DT, func(r *privhelper.Request) { r.Tap = "wlan0" }), denied, `tap "wlan0" is not banger's`},
		{"tap outside the request's prefix", with(CT, func(r *privhelper.Request) { r.TapPrefix, r.Tap = "bgtapx", "bgtap1" }), denied, `must start with "bgtapx"`},
		{"tap outside the request's prefix on delete", with(DT, func(r *privhelper.Request) { r.TapPrefix, r.Tap = "bgtapx", "bgtapy1" }), denied, `must start with "bgtapx"`},
		{"tap name too long", with(DT, func(r *privhelper.Request) { r.Tap = "bgtap0123456789abc" }), invalid, "longer than 15"},
		{"tap name chars", with(DT, func(r *privhelper.Request) { r.Tap = "bgtap/../x" }), invalid, "has '/'"},
		{"empty tap", with(CT, func(r *privhelper.Request) {}), denied, `tap "" is not banger's`},
		{"foreign tap prefix", with(E, func(r *privhelper.Request) { r.TapPrefix = "vnet" }), denied, `tap prefix "vnet" is not banger's`},
		{"tap prefix too long", with(E, func(r *privhelper.Request) { r.TapPrefix = "bgtapxyz" }), invalid, "longer than 7 bytes"},
		{"table of no bridge", with(E, func(r *privhelper.Request) { r.Table = "filter" }), denied, `nftables table "filter" is not the table of bridge banger3 ("banger-banger3")`},
		{"table of another bridge", with(E, func(r *privhelper.Request) { r.Table = netmgr.TableFor("banger0") }), denied, `nftables table "banger" is not the table of bridge banger3`},
		{"no table", with(E, func(r *privhelper.Request) { r.Table = "" }), denied, `nftables table "" is not the table`},
		{"subnet outside the range", with(E, func(r *privhelper.Request) { r.Subnet = "192.168.1.0/24" }), denied, "outside the allowed range 10.200.0.0/16"},
		{"subnet wider than the range", with(E, func(r *privhelper.Request) { r.Subnet = "10.200.0.0/15" }), denied, "outside the allowed range"},
		{"subnet overlapping the range from outside", with(E, func(r *privhelper.Request) { r.Subnet = "10.0.0.0/8" }), denied, "outside the allowed range"},
		{"subnet not a network address", with(E, func(r *privhelper.Request) { r.Subnet = "10.200.3.5/24" }), invalid, "not an IPv4 network address"},
		{"subnet without a length", with(E, func(r *privhelper.Request) { r.Subnet = "10.200.3.0" }), invalid, "not an IPv4 network address"},
		{"IPv6 subnet", with(E, func(r *privhelper.Request) { r.Subnet = "fd00::/64" }), invalid, "not an IPv4 network address"},
		{"subnet narrower than /30", with(E, func(r *privhelper.Request) { r.Subnet = "10.200.3.0/31" }), invalid, "narrower than /30"},
		{"no subnet", with(E, func(r *privhelper.Request) { r.Subnet = "" }), invalid, "not an IPv4 network address"},
		{"guest outside the subnet", pub(func(r *privhelper.Request) { r.Guest = "10.200.4.2:8080" }), denied, "guest address 10.200.4.2 is outside the network's subnet 10.200.3.0/24"},
		{"guest on the host", pub(func(r *privhelper.Request) { r.Guest = "127.0.0.1:22" }), denied, "outside the network's subnet"},
		{"guest without a port", pub(func(r *privhelper.Request) { r.Guest = "10.200.3.2" }), invalid, "not IPv4-ADDRESS:PORT"},
		{"guest port 0", pub(func(r *privhelper.Request) { r.Guest = "10.200.3.2:0" }), invalid, "not IPv4-ADDRESS:PORT"},
		{"IPv6 guest", pub(func(r *privhelper.Request) { r.Guest = "[fd00::2]:80" }), invalid, "not IPv4-ADDRESS:PORT"},
		{"host port 0", pub(func(r *privhelper.Request) { r.HostPort = 0 }), invalid, "host port 0 is not 1 to 65535"},
		{"host port too big", pub(func(r *privhelper.Request) { r.HostPort = 70000 }), invalid, "host port 70000"},
		{"negative host port", with(U, func(r *privhelper.Request) { r.VMID, r.HostPort = "1a2b", -1 }), invalid, "host port -1"},
		{"vm id with a path", pub(func(r *privhelper.Request) { r.VMID = "../etc" }), invalid, `vm id "../etc" has '.'`},
		{"vm id upper case", pub(func(r *privhelper.Request) { r.VMID = "VM1" }), invalid, "vm id"},
		{"vm id too long", pub(func(r *privhelper.Request) { r.VMID = strings.Repeat("a", 65) }), invalid, "longer than 64"},
		{"no vm id", with(U, func(r *privhelper.Request) {}), invalid, `vm id "" is empty`},
		{"unknown op", privhelper.Request{Op: "run_command"}, invalid, `unknown operation "run_command"`},
		{"the old protocol's op", privhelper.Request{Op: "loop_attach"}, invalid, "unknown operation"},
		{"stray field", privhelper.Request{Op: privhelper.OpHello, Origin: "/etc/shadow"}, invalid, `hello does not take "origin"`},
		{"stray tap", with(E, func(r *privhelper.Request) { r.Tap = "bgtap1" }), invalid, `ensure_network does not take "tap"`},
		{"stray vm id", with(CT, func(r *privhelper.Request) { r.Tap, r.VMID = "bgtap1", "x" }), invalid, `create_tap does not take "vm_id"`},
		{"stray guest", with(U, func(r *privhelper.Request) { r.VMID, r.Guest = "x", "10.200.3.2:1" }), invalid, `unpublish does not take "guest"`},
		{"stray network", privhelper.Request{Op: privhelper.OpListSnapshots, Bridge: "banger0"}, invalid, `list_snapshots does not take "bridge"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.do(t, c.req)
			wantCode(t, err, c.code, c.text)
			f.wantNoCalls(t)
		})
	}
}

// files lists the names under dir, to show that a refusal made nothing.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSnapshotRefusals(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state, real := f.state[self()], f.real[self()]
	outside := t.TempDir()
	secret := mkfile(t, filepath.Join(outside, "secret"), 1<<20)
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	if err := os.MkdirAll(filepath.Join(state, "vms", "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	mustSymlink := func(target, link string) string {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return link
	}
	fileLink := mustSymlink(secret, filepath.Join(state, "images", "innocent.ext4"))
	dirLink := mustSymlink(outside, filepath.Join(state, "vms", "b"))
	cowLink := mustSymlink(secret, filepath.Join(state, "vms", "a", "linked.cow"))
	dangling := mustSymlink(filepath.Join(outside, "planted.cow"), filepath.Join(state, "vms", "a", "dangling.cow"))
	const size = dmsnap.MinCOWSize
	snap := func(name, origin, cow string, size int64) privhelper.Request {
		return privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: name, Origin: origin, COWFile: cow, COWSize: size}
	}
	newCOW := filepath.Join(state, "vms", "a", "root.cow")
	denied, invalid := privhelper.CodeDenied, privhelper.CodeInvalid
	type tc struct {
		name string
		req  privhelper.Request
		code string
		text string
	}
	cases := []tc{
		{"bad name", snap("snap1", origin, newCOW, size), invalid, `snapshot name "snap1" must start with "banger-"`},
		{"bare prefix", snap("banger-", origin, newCOW, size), invalid, "must start with"},
		{"name with a slash", snap("banger-a/b", origin, newCOW, size), invalid, "has '/'"},
		{"origin outside", snap("banger-a", secret, newCOW, size), denied, "outside the caller's state dir"},
		{"origin through a symlink", snap("banger-a", fileLink, newCOW, size), denied, "does not exist, or is outside the caller's state dir"},
		{"origin through a directory symlink", snap("banger-a", filepath.Join(dirLink, "secret"), newCOW, size), denied, "outside the caller's state dir"},
		{"origin through dot-dot", snap("banger-a", state+"/../../"+filepath.Base(outside)+"/secret", newCOW, size), denied, "outside the caller's state dir"},
		{"origin the state dir's parent", snap("banger-a", state+"/..", newCOW, size), denied, "outside the caller's state dir"},
		{"origin is the state dir", snap("banger-a", state, newCOW, size), denied, "outside the caller's state dir"},
		{"relative origin", snap("banger-a", "images/base.ext4", newCOW, size), invalid, "not absolute"},
		{"missing origin", snap("banger-a", filepath.Join(state, "images", "nope"), newCOW, size), denied, "does not exist, or is outside"},
		{"origin a directory", snap("banger-a", filepath.Join(state, "images"), newCOW, size), invalid, "is not a regular file"},
		{"cow in a dir outside", snap("banger-a", origin, filepath.Join(outside, "new.cow"), size), denied, "outside the caller's state dir"},
		{"cow through a directory symlink", snap("banger-a", origin, filepath.Join(dirLink, "new.cow"), size), denied, "outside the caller's state dir"},
		{"cow a symlink to a file outside", snap("banger-a", origin, cowLink, size), denied, "outside the caller's state dir"},
		{"cow a dangling symlink", snap("banger-a", origin, dangling, size), denied, "does not exist, or is outside"},
		{"cow a directory", snap("banger-a", origin, filepath.Join(state, "vms", "a"), size), invalid, "is a directory"},
		{"cow in a missing dir", snap("banger-a", origin, filepath.Join(state, "vms", "nope", "root.cow"), size), denied, "does not exist, or is outside"},
		{"relative cow", snap("banger-a", origin, "root.cow", size), invalid, "not absolute"},
		{"cow too small", snap("banger-a", origin, newCOW, dmsnap.MinCOWSize-1), invalid, fmt.Sprintf("cow_size %d is below the minimum %d bytes", dmsnap.MinCOWSize-1, dmsnap.MinCOWSize)},
		{"cow size missing", snap("banger-a", origin, newCOW, 0), invalid, "below the minimum"},
		{"cow size negative", snap("banger-a", origin, newCOW, -1), invalid, "below the minimum"},
	}
	if os.Geteuid() == 0 {
		foreign := mkfile(t, filepath.Join(state, "images", "nobodys.ext4"), 1<<20)
		foreignCOW := mkfile(t, filepath.Join(state, "vms", "a", "nobodys.cow"), 1<<20)
		foreignDir := filepath.Join(state, "vms", "n")
		if err := os.Mkdir(foreignDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{foreign, foreignCOW, foreignDir} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		fifo := filepath.Join(state, "vms", "a", "pipe.cow")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		null := filepath.Join(state, "images", "null")
		if err := unix.Mknod(null, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			tc{"origin of another uid", snap("banger-a", foreign, newCOW, size), denied, fmt.Sprintf("belongs to uid %d, not the caller (%d)", nobody, self())},
			tc{"origin a device", snap("banger-a", null, newCOW, size), invalid, "is not a regular file"},
			tc{"cow a FIFO", snap("banger-a", origin, fifo, 0), invalid, "is not a regular file"},
			tc{"cow of another uid", snap("banger-a", origin, foreignCOW, 0), denied, fmt.Sprintf("belongs to uid %d", nobody)},
			tc{"cow in a dir of another uid", snap("banger-a", origin, filepath.Join(foreignDir, "root.cow"), size), denied, "does not belong to the caller"},
		)
	}
	beforeState, beforeOutside := files(t, real), files(t, outside)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.do(t, c.req)
			wantCode(t, err, c.code, c.text)
			f.wantNoCalls(t)
			if got := files(t, real); strings.Join(got, "\n") != strings.Join(beforeState, "\n") {
				t.Fatalf("a refused request changed the state dir:\n%s", strings.Join(got, "\n"))
			}
			if got := files(t, outside); strings.Join(got, "\n") != strings.Join(beforeOutside, "\n") {
				t.Fatalf("a refused request changed a dir outside:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

// TestOriginFIFODoesNotBlockTheHelper: a FIFO named as origin must be
// refused, not opened for reading and waited on, which would hold the
// request, and the helper's shutdown, until someone writes to it.
func TestOriginFIFODoesNotBlockTheHelper(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	fifo := filepath.Join(state, "images", "pipe.ext4")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := f.client().Do(context.Background(), privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: "banger-a",
			Origin: fifo, COWFile: filepath.Join(state, "images", "root.cow"), COWSize: dmsnap.MinCOWSize})
		res <- err
	}()
	select {
	case err := <-res:
		wantCode(t, err, privhelper.CodeInvalid, "is not a regular file")
	case <-time.After(time.Minute): // only so that a blocked helper fails the test instead of hanging it
		if w, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close() // lets the blocked open return, so the helper can stop
		}
		<-res
		t.Fatal("the helper blocked opening a FIFO named as origin")
	}
	f.wantNoCalls(t)
}

func TestCreateSnapshotHandsOverOpenFiles(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state, real := f.state[self()], f.real[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	if err := os.MkdirAll(filepath.Join(state, "vms", "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	cow := filepath.Join(state, "vms", "a", "root.cow")
	const size = 4 << 20
	s, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, cow, size)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "banger-a" || s.Device != "/dev/mapper/banger-a" || s.Sectors != 4096 {
		t.Errorf("answer %+v does not carry the executor's snapshot", s)
	}
	cs := f.rec.createCalls()
	if len(cs) != 1 {
		t.Fatalf("executor got %d CreateSnapshot calls, want 1", len(cs))
	}
	c := cs[0]
	if c.uid != self() || c.name != "banger-a" || c.cowSize != size {
		t.Errorf("executor got %+v", c)
	}
	// The executor gets the files the helper checked and opened, not the
	// caller's paths, which could be swapped after the check.
	for _, p := range []string{c.origin, c.cow} {
		if !strings.HasPrefix(p, "/proc/self/fd/") {
			t.Errorf("executor got path %q, want /proc/self/fd/N", p)
		}
	}
	if want := filepath.Join(real, "images", "base.ext4"); c.originReal != want || c.originMode != unix.O_RDONLY {
		t.Errorf("origin fd names %q mode %d, want %q read-only", c.originReal, c.originMode, want)
	}
	realCOW := filepath.Join(real, "vms", "a", "root.cow")
	if c.cowReal != realCOW || c.cowMode != unix.O_RDWR {
		t.Errorf("cow fd names %q mode %d, want %q read-write", c.cowReal, c.cowMode, realCOW)
	}
	if c.cowSizeNow != size || c.cowOwner != int64(self()) {
		t.Errorf("the COW file the executor saw is %d bytes owned by %d, want %d owned by %d", c.cowSizeNow, c.cowOwner, size, self())
	}
	st, err := os.Stat(cow)
	if err != nil {
		t.Fatalf("the new COW file is gone: %v", err)
	}
	if st.Size() != size || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != self() {
		t.Errorf("COW file is %d bytes, mode %v, uid %d; want %d, 0600, %d", st.Size(), st.Mode(), st.Sys().(*syscall.Stat_t).Uid, size, self())
	}

	// An existing COW file is reused as it is, with any cow_size.
	if err := os.WriteFile(filepath.Join(state, "vms", "a", "old.cow"), []byte("changes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client().CreateSnapshot(bounded(t), "banger-b", origin, filepath.Join(state, "vms", "a", "old.cow"), 0); err != nil {
		t.Fatal(err)
	}
	if c := f.rec.createCalls()[1]; c.cowReal != filepath.Join(real, "vms", "a", "old.cow") || c.cowSizeNow != int64(len("changes")) {
		t.Errorf("reused COW: executor saw %q of %d bytes", c.cowReal, c.cowSizeNow)
	}
}

func TestCreateSnapshotFailureRemovesOnlyTheNewCOWFile(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	kept := filepath.Join(state, "vms", "a", "kept.cow")
	if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, []byte("the VM's changes"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.rec.createErr = errors.New("device-mapper said no")

	fresh := filepath.Join(state, "vms", "a", "fresh.cow")
	_, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, fresh, dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if len(f.rec.createCalls()) != 1 || f.rec.createCalls()[0].cowSizeNow != dmsnap.MinCOWSize {
		t.Fatalf("the executor did not see the new COW file: %+v", f.rec.createCalls())
	}
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the COW file the helper made is still there after the executor failed: %v", err)
	}

	_, err = f.client().CreateSnapshot(bounded(t), "banger-a", origin, kept, dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if b, err := os.ReadFile(kept); err != nil || string(b) != "the VM's changes" {
		t.Errorf("a failed snapshot touched the existing COW file: %q, %v", b, err)
	}
}

// TestCreateSnapshotCleanupFollowsNoSwappedDir swaps the COW file's
// directory for a symlink while the executor runs, then fails it: the
// helper's cleanup must remove the file it made, not a same-named file
// where the symlink points.
func TestCreateSnapshotCleanupFollowsNoSwappedDir(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	vmDir := filepath.Join(state, "vms", "a")
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	victim := filepath.Join(outside, "root.cow")
	if err := os.WriteFile(victim, []byte("not the caller's"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.rec.createErr = errors.New("device-mapper said no")
	f.rec.onCreate = func() {
		if err := os.Rename(vmDir, vmDir+".moved"); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(outside, vmDir); err != nil {
			t.Error(err)
		}
	}
	_, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, filepath.Join(vmDir, "root.cow"), dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("the helper's cleanup followed the swapped-in symlink and removed %s: %v", victim, err)
	}
	if _, err := os.Lstat(filepath.Join(vmDir+".moved", "root.cow")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the COW file the helper made is still there: %v", err)
	}
}

func TestRemoveAndListSnapshotsAreTheCallers(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(self(), nobody))
	mine := privops.Snapshot{Name: "banger-mine", Device: "/dev/mapper/banger-mine", COWFile: filepath.Join(f.real[self()], "vms", "a", "root.cow")}
	theirsName := privhelper.SnapshotPrefix(nobody) + "theirs"
	theirs := privops.Snapshot{Name: theirsName, Device: "/dev/mapper/" + theirsName, COWFile: filepath.Join(f.real[nobody], "vms", "b", "root.cow")}
	stray := privops.Snapshot{Name: "banger-stray", Device: "/dev/mapper/banger-stray", COWFile: "/var/tmp/root.cow"}
	unknown := privops.Snapshot{Name: "banger-unknown", Device: "/dev/mapper/banger-unknown"}
	// A COW file next to the state dir, sharing its name as a prefix.
	sibling := privops.Snapshot{Name: "banger-sibling", Device: "/dev/mapper/banger-sibling", COWFile: f.real[self()] + "x/root.cow"}
	f.rec.snaps = []privops.Snapshot{mine, theirs, stray, unknown, sibling}

	l, err := f.client().ListSnapshots(bounded(t))
	if err != nil || len(l) != 1 || l[0] != mine {
		t.Fatalf("root lists %+v, %v; want only %s", l, err, mine.Name)
	}
	resp, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpListSnapshots})
	if err != nil || len(resp.Snapshots) != 1 || resp.Snapshots[0].Name != theirs.Name || resp.Snapshots[0].COWFile != theirs.COWFile {
		t.Fatalf("nobody lists %+v, %v; want only %s", resp.Snapshots, err, theirs.Name)
	}

	for _, s := range []privops.Snapshot{theirs, stray, unknown, sibling} {
		err := f.client().RemoveSnapshot(bounded(t), s.Name)
		wantCode(t, err, privhelper.CodeDenied, "snapshot "+s.Name+" is not the caller's")
	}
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: mine.Name})
	wantCode(t, err, privhelper.CodeDenied, "snapshot banger-mine is not the caller's")
	_, err = f.client().Do(bounded(t), privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: "mine"})
	wantCode(t, err, privhelper.CodeInvalid, "must start with")
	for _, c := range f.rec.list() {
		if strings.Contains(c, "remove_snapshot") {
			t.Fatalf("a refused remove reached the executor: %q", f.rec.list())
		}
	}

	if _, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: theirs.Name}); err != nil {
		t.Fatal(err)
	}
	if got := f.rec.list(); got[len(got)-1] != fmt.Sprintf("uid=%d remove_snapshot %s", nobody, theirsName) {
		t.Fatalf("nobody's remove of its own snapshot: executor saw %q", got)
	}
}

// TestRemoveSnapshotNeedsTheCallersPrefix: a user may remove only
// snapshots named under their own uid, even one that did not exist when
// the helper listed the snapshots (another user's, made in between).
func TestRemoveSnapshotNeedsTheCallersPrefix(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(self(), nobody))
	for _, name := range []string{privhelper.SnapshotPrefix(1000) + "a", privhelper.SnapshotPrefix(self()) + "a", "banger-a"} {
		_, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: name})
		wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("snapshot %s is not the caller's: its name must start with %q", name, privhelper.SnapshotPrefix(nobody)))
	}
	f.wantNoCalls(t)
	// Root removes any banger snapshot whose COW file is in its state dir,
	// or that the listing does not show.
	if err := f.client().RemoveSnapshot(bounded(t), privhelper.SnapshotPrefix(1000)+"a"); err != nil {
		t.Fatal(err)
	}
}

// TestNonRootCaller sends requests from a process running as nobody: the
// helper acts for the uid the kernel reports, not for itself.
func TestNonRootCaller(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(nobody))
	pub := netReq(privhelper.OpPublish)
	pub.VMID, pub.Guest = "1a2b", "10.200.3.2:80"

	for _, port := range []int{80, 1023} {
		pub.HostPort = port
		_, err := f.asNobody(t, pub)
		wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("host port %d is privileged (below 1024)", port))
	}
	f.wantNoCalls(t)
	wide := netReq(privhelper.OpEnsureNetwork)
	wide.Subnet = "10.200.0.0/23"
	_, err := f.asNobody(t, wide)
	wantCode(t, err, privhelper.CodeDenied, "wider than a /24")
	for _, port := range []int{53, 1023} {
		ens := netReq(privhelper.OpEnsureNetwork)
		ens.DNSPort = port
		_, err := f.asNobody(t, ens)
		wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("dns_port %d is privileged (below 1024)", port))
	}
	f.wantNoCalls(t)
	pub.HostPort = 1024
	if _, err := f.asNobody(t, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := f.asNobody(t, netReq(privhelper.OpEnsureNetwork)); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("uid=%d publish %s 1a2b 1024 10.200.3.2:80", nobody, spec(theNet)), fmt.Sprintf("uid=%d ensure_network %s", nobody, spec(theNet))}
	if got := f.rec.list(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("executor saw %q, want %q", got, want)
	}

	// Snapshots: the COW file the helper makes is nobody's; root's files
	// and root's state dir are refused.
	st := f.state[nobody]
	origin := mkfile(t, filepath.Join(st, "images", "base.ext4"), 2<<20)
	rootsOrigin := mkfile(t, filepath.Join(st, "images", "roots.ext4"), 2<<20)
	vmDir := filepath.Join(st, "vms", "a")
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(st, "images"), origin, filepath.Join(st, "vms"), vmDir} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	cow := filepath.Join(vmDir, "root.cow")
	snap := privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: privhelper.SnapshotPrefix(nobody) + "a", Origin: rootsOrigin, COWFile: cow, COWSize: dmsnap.MinCOWSize}
	squat := snap
	squat.Name = "banger-a"
	_, err = f.asNobody(t, squat)
	wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf(`must start with "banger-%d-"`, nobody))
	_, err = f.asNobody(t, snap)
	wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("belongs to uid 0, not the caller (%d)", nobody))
	rootState := mkfile(t, filepath.Join(f.state[self()], "images", "base.ext4"), 2<<20)
	snap.Origin = rootState
	_, err = f.asNobody(t, snap)
	wantCode(t, err, privhelper.CodeDenied, "outside the caller's state dir "+st)
	if _, err := os.Lstat(cow); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused snapshot made %s: %v", cow, err)
	}

	snap.Origin = origin
	resp, err := f.asNobody(t, snap)
	if err != nil || len(resp.Snapshots) != 1 || resp.Snapshots[0].Name != snap.Name {
		t.Fatalf("create_snapshot as nobody: %+v, %v", resp, err)
	}
	c := f.rec.createCalls()
	if len(c) != 1 || c[0].uid != nobody || c[0].cowReal != cow || c[0].cowOwner != nobody {
		t.Fatalf("executor got %+v", c)
	}
	fi, err := os.Stat(cow)
	if err != nil {
		t.Fatal(err)
	}
	if s := fi.Sys().(*syscall.Stat_t); s.Uid != nobody || s.Gid != nobody || fi.Size() != dmsnap.MinCOWSize {
		t.Errorf("the new COW file is %d:%d with %d bytes, want %d:%d with %d", s.Uid, s.Gid, fi.Size(), nobody, nobody, dmsnap.MinCOWSize)
	}
}

// raw sends bytes as a request and decodes the answer.
func raw(t *testing.T, sock string, data []byte) privhelper.Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A refused caller is answered before the helper reads: the write may
	// then fail, and the answer is still there to read.
	if _, err := c.Write(data); err == nil {
		_ = c.(*net.UnixConn).CloseWrite()
	}
	var r privhelper.Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMalformedRequests(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	v := strconv.Itoa(privhelper.ProtocolVersion)
	for _, c := range []struct{ name, data, text string }{
		{"garbage", "not json at all", "malformed request"},
		{"empty", "", "malformed request"},
		{"unknown field", `{"version":` + v + `,"op":"hello","command":"rm -rf /"}`, `unknown field "command"`},
		{"wrong version", `{"version":1,"op":"list_snapshots"}`, "the caller speaks protocol version 1, the helper " + v},
		{"no version", `{"op":"list_snapshots"}`, "protocol version 0"},
		{"two values", `{"version":` + v + `,"op":"hello"}{"version":` + v + `,"op":"hello"}`, "more than one JSON value"},
		{"oversized", `{"version":` + v + `,"op":"hello","bridge":"` + strings.Repeat("a", privhelper.MaxRequest) + `"}`, "over the 65536 byte limit"},
		{"wrong type", `{"version":"` + v + `","op":"hello"}`, "malformed request"},
		{"wrong type of port", `{"version":` + v + `,"op":"unpublish","host_port":"80"}`, "malformed request"},
		{"array", `[{"version":` + v + `,"op":"hello"}]`, "malformed request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := raw(t, f.sock, []byte(c.data))
			if r.OK || r.Code != privhelper.CodeInvalid || !strings.Contains(r.Error, c.text) {
				t.Fatalf("answer %+v, want invalid containing %q", r, c.text)
			}
		})
	}
	f.wantNoCalls(t)
	// The helper still answers after all that.
	if _, err := f.client().Hello(bounded(t)); err != nil {
		t.Fatal(err)
	}
}

func TestUIDNotAllowed(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()+4242))
	for _, r := range []privhelper.Request{{Op: privhelper.OpHello}, netReq(privhelper.OpEnsureNetwork)} {
		_, err := f.do(t, r)
		wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("uid %d is not allowed to use the banger helper", self()))
	}
	// Refused before parsing: a malformed request gets the same answer.
	r := raw(t, f.sock, []byte("not json"))
	if r.Code != privhelper.CodeDenied {
		t.Errorf("malformed request from a refused uid: %+v, want denied", r)
	}
	f.wantNoCalls(t)
}

// TestOtherUserIsIdentifiedByKernel runs a client as user nobody: the
// helper must see that uid through SO_PEERCRED and refuse it, whatever the
// client claims.
func TestOtherUserIsIdentifiedByKernel(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(0))
	_, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpHello})
	wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("uid %d is not allowed", nobody))
	_, err = f.asNobody(t, netReq(privhelper.OpTeardownNetwork))
	wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("uid %d is not allowed", nobody))
	f.wantNoCalls(t)
}

// TestAnotherProtocolIsAnsweredHelloOnly: a caller of another protocol
// gets hello answered with the helper's protocol and build, so that it can
// say what is wrong, and any other request refused, naming both versions.
func TestAnotherProtocolIsAnsweredHelloOnly(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	v := privhelper.ProtocolVersion
	for _, other := range []int{v - 1, v + 1} {
		r := raw(t, f.sock, fmt.Appendf(nil, `{"version":%d,"op":"hello"}`, other))
		if !r.OK || r.Protocol != v || r.Version != "test" || r.StateDir != f.real[self()] {
			t.Errorf("hello of protocol %d: %+v, want the helper's protocol %d and build", other, r, v)
		}
		for _, op := range []string{`"op":"list_snapshots"`, `"op":"snapshots_available"`, `"op":"remove_snapshot","name":"banger-a"`} {
			r := raw(t, f.sock, fmt.Appendf(nil, `{"version":%d,%s}`, other, op))
			want := fmt.Sprintf("the caller speaks protocol version %d, the helper %d", other, v)
			if r.OK || r.Code != privhelper.CodeInvalid || !strings.Contains(r.Error, want) {
				t.Errorf("{%s} of protocol %d: %+v, want invalid containing %q", op, other, r, want)
			}
		}
	}
	f.wantNoCalls(t)
}

func TestListenRefusesASecondHelper(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	if _, err := privhelperd.Listen(f.sock); err == nil || !strings.Contains(err.Error(), "another banger helper already listens on "+f.sock) {
		t.Fatalf("second Listen: %v", err)
	}
	if _, err := f.client().Hello(bounded(t)); err != nil {
		t.Fatalf("the first helper stopped answering: %v", err)
	}
	fi, err := os.Stat(f.sock)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v, %v; want 0666 (callers are checked by SO_PEERCRED)", fi.Mode(), err)
	}
}

// TestListenShowsTheSocketOnlyReady: the socket appears under its name
// already 0666 (it is bound under another name first), nothing else is left
// in its directory, and Close removes it.
func TestListenShowsTheSocketOnlyReady(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "helper.sock")
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	ln, err := privhelperd.Listen(sock)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o666 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v, %v; want a 0666 socket", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket", len(ents))
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the socket by its name: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
	// A late second Close of the old listener leaves a new helper's socket
	// on the same path alone.
	ln2, err := privhelperd.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the old listener's second Close removed the new socket: %v", err)
	}
}

// TestIdleConnectionsCannotWedgeTheHelper: one caller holding connections
// open without a request gets its share (8) and no more; the others, and the
// same caller once it lets go, are served.
func TestIdleConnectionsCannotWedgeTheHelper(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	var idle []net.Conn
	for range 8 {
		c, err := net.Dial("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// The helper counts a connection once it has accepted it: wait until
	// the ninth is refused rather than sleeping a guessed time.
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err = f.client().Do(bounded(t), privhelper.Request{Op: privhelper.OpHello}); err != nil {
			break
		}
	}
	wantCode(t, err, privhelper.CodeFailed, "too many requests")
	for _, c := range idle {
		c.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err = f.client().Do(bounded(t), privhelper.Request{Op: privhelper.OpHello}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the idle connections closed: %v", err)
	}
}

// TestStateDirSymlinkedToRoot: a user whose state dir is a symlink to "/"
// (or to anything not theirs) gets no state dir at all, so another user's
// snapshots are not theirs to list or remove, and no file becomes theirs.
func TestStateDirSymlinkedToRoot(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(nobody))
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink("/", link); err != nil {
		t.Fatal(err)
	}
	f.state[nobody] = link
	roots := privops.Snapshot{Name: "banger-roots", Device: "/dev/mapper/banger-roots", COWFile: "/var/lib/banger/vms/x/root.cow"}
	f.rec.snaps = []privops.Snapshot{roots}

	r, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpHello})
	if err != nil || r.StateDir != "" {
		t.Fatalf("hello = %+v, %v; want no state dir", r, err)
	}
	if r, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpListSnapshots}); err != nil || len(r.Snapshots) != 0 {
		t.Fatalf("list = %+v, %v; want nothing", r, err)
	}
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: roots.Name})
	wantCode(t, err, privhelper.CodeDenied, "not the caller's")
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: privhelper.SnapshotPrefix(nobody) + "x",
		Origin: filepath.Join(link, "etc", "shadow"), COWFile: filepath.Join(link, "tmp", "x.cow"), COWSize: 1 << 20})
	wantCode(t, err, privhelper.CodeDenied, "is not a directory of that user's")
	for _, c := range f.rec.list() {
		if strings.Contains(c, "remove_snapshot") || strings.Contains(c, "create_snapshot") {
			t.Fatalf("a refused request reached the executor: %q", f.rec.list())
		}
	}
}
