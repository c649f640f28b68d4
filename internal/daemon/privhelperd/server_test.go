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
