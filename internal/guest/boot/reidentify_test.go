package boot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/guest/proto"
	"banger/internal/testutil"
	"banger/internal/testutil/netnstest"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
)

// resumeCalls records what Resume asked of the machine, in order.
type resumeCalls struct {
	log      []string
	entropy  []byte
	clock    time.Time
	hostname string
	reloads  int
}

// resumeRoot is a parent's file system as a snapshot would leave it: a
// host name, a hosts line, ed25519, ecdsa and RSA host keys.
func resumeRoot(t *testing.T) (ResumeEnv, *resumeCalls) {
	t.Helper()
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	sshDir := filepath.Join(etc, "ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"hostname": "parent\n",
		"hosts":    "127.0.0.1\tlocalhost\n127.0.1.1\tparent\n10.9.9.9\tbuild-cache # the user's\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, kt := range hostKeyTypes {
		if _, err := writeHostKey(filepath.Join(sshDir, "ssh_host_"+kt.name+"_key"), kt.gen, "root@parent"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"ssh_host_rsa_key", "ssh_host_rsa_key.pub"} {
		if err := os.WriteFile(filepath.Join(sshDir, p), []byte("the parent's RSA key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := &resumeCalls{}
	env := ResumeEnv{
		Env: Env{
			EtcDir:      etc,
			SetHostname: func(n string) error { c.log = append(c.log, "hostname"); c.hostname = n; return nil },
		},
		SSHDir:    sshDir,
		StateFile: filepath.Join(root, "run", "banger", "resumed"),
		AddEntropy: func(b []byte) error {
			c.log = append(c.log, "entropy")
			c.entropy = slices.Clone(b)
			return nil
		},
		SetClock: func(tm time.Time) error { c.log = append(c.log, "clock"); c.clock = tm; return nil },
		Now:      func() time.Time { return time.Unix(1_700_000_000, 0) },
		ReloadSSHD: func() (bool, error) {
			c.log = append(c.log, "reload")
			c.reloads++
			return true, nil
		},
	}
	return env, c
}

func resumeRequest(t *testing.T) proto.ResumedRequest {
	t.Helper()
	seed := make([]byte, proto.MinResumeEntropy)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	return proto.ResumedRequest{ID: "clone-id-1", Hostname: "clone-1", UnixNano: time.Unix(1_800_000_000, 5).UnixNano(), Entropy: seed}
}

func resumeReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func resumeStep(res proto.ResumedResult, duty string) proto.ResumedStep {
	for _, s := range res.Steps {
		if s.Duty == duty {
			return s
		}
	}
	return proto.ResumedStep{Duty: duty, Status: "missing"}
}

func TestResumeGivesTheCloneItsOwnIdentity(t *testing.T) {
	env, calls := resumeRoot(t)
	before := map[string]string{}
	for _, n := range []string{"ed25519", "ecdsa"} {
		before[n] = resumeReadFile(t, filepath.Join(env.SSHDir, "ssh_host_"+n+"_key"))
	}
	req := resumeRequest(t)
	res, err := Resume(context.Background(), req, env)
	if err != nil {
		t.Fatalf("Resume: %v\n%+v", err, res)
	}
	// The host's randomness goes in first, before any key is made.
	if want := []string{"entropy", "clock", "hostname", "reload"}; !slices.Equal(calls.log, want) {
		t.Errorf("calls %v, want %v", calls.log, want)
	}
	if !bytes.Equal(calls.entropy, req.Entropy) || !calls.clock.Equal(req.Time()) || calls.hostname != "clone-1" {
		t.Errorf("hooks got entropy equal=%v, clock %v, host name %q", bytes.Equal(calls.entropy, req.Entropy), calls.clock, calls.hostname)
	}
	if got := resumeReadFile(t, filepath.Join(env.EtcDir, "hostname")); got != "clone-1\n" {
		t.Errorf("hostname file %q", got)
	}
	if got := resumeReadFile(t, filepath.Join(env.EtcDir, "hosts")); !strings.Contains(got, "127.0.1.1\tclone-1\n") || strings.Contains(got, "parent") || !strings.Contains(got, "build-cache") {
		t.Errorf("hosts file:\n%s", got)
	}
	// New keys, different from the parent's, matching the answer; RSA gone.
	var pubs []string
	for _, n := range []string{"ecdsa", "ed25519"} {
		priv := filepath.Join(env.SSHDir, "ssh_host_"+n+"_key")
		data := resumeReadFile(t, priv)
		if data == before[n] {
			t.Errorf("%s key not replaced", n)
		}
		signer, err := ssh.ParsePrivateKey([]byte(data))
		if err != nil {
			t.Fatalf("%s: %v", priv, err)
		}
		pub := strings.TrimSpace(resumeReadFile(t, priv+".pub"))
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
		if err != nil || !bytes.Equal(pk.Marshal(), signer.PublicKey().Marshal()) {
			t.Errorf("%s.pub does not match its private key (%v)", priv, err)
		}
		for p, mode := range map[string]os.FileMode{priv: 0o600, priv + ".pub": 0o644} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v (%v)", p, fi.Mode().Perm(), mode, err)
			}
		}
		pubs = append(pubs, pub)
	}
	if !slices.Equal(res.HostKeys, pubs) {
		t.Errorf("answer's keys %q, files hold %q", res.HostKeys, pubs)
	}
	if _, err := os.Lstat(filepath.Join(env.SSHDir, "ssh_host_rsa_key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the parent's RSA key is still there: %v", err)
	}
	for duty, want := range map[string]string{DutyEntropy: "done", DutyClock: "done", DutyHostname: "done",
		DutyNetwork: "skipped", DutyDNS: "skipped", DutyHostKeys: "done", DutySSHD: "done"} {
		if s := resumeStep(res, duty); s.Status != want {
			t.Errorf("%s: %+v, want %s", duty, s, want)
		}
	}
	// The answer is what the host accepts.
	if _, err := proto.DecodeResumedResult(resumeAnswer(t, res)); err != nil {
		t.Errorf("the host would refuse the answer: %v", err)
	}

	// The same request again changes nothing: same keys, no reload, and
	// the clock (now past the request's time) is not stepped back.
	env.Now = func() time.Time { return req.Time().Add(3 * time.Second) }
	calls.log = nil
	res2, err := Resume(context.Background(), req, env)
	if err != nil {
		t.Fatalf("second Resume: %v", err)
	}
	if !slices.Equal(res2.HostKeys, res.HostKeys) || resumeStep(res2, DutyHostKeys).Status != "unchanged" {
		t.Errorf("repeat changed the keys: %+v", res2)
	}
	if want := []string{"entropy", "hostname"}; !slices.Equal(calls.log, want) {
		t.Errorf("repeat calls %v, want %v", calls.log, want)
	}
	if s := resumeStep(res2, DutyClock); s.Status != "unchanged" {
		t.Errorf("repeat clock step %+v", s)
	}

	// Another clone's id makes new keys again.
	req.ID = "clone-id-2"
	res3, err := Resume(context.Background(), req, env)
	if err != nil || slices.Equal(res3.HostKeys, res.HostKeys) || len(res3.HostKeys) != 2 {
		t.Errorf("a new id kept the keys: %v %+v", err, res3)
	}
}

func resumeAnswer(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := proto.NewWriter(&buf).WriteJSON(proto.TypeOK, v); err != nil {
		t.Fatal(err)
	}
	f, err := proto.NewReader(&buf).Next()
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(f.Payload)
}

func TestResumeReportsEveryFailedDutyAndGoesOn(t *testing.T) {
	env, _ := resumeRoot(t)
	env.AddEntropy = func([]byte) error { return errors.New("EPERM from the test") }
	env.SetClock = func(time.Time) error { return errors.New("no clock here") }
	req := resumeRequest(t)
	res, err := Resume(context.Background(), req, env)
	if err == nil || !strings.Contains(err.Error(), "EPERM from the test") || !strings.Contains(err.Error(), "no clock here") {
		t.Fatalf("error %v does not name both failures", err)
	}
	if f := res.Failed(); len(f) != 2 || f[0].Duty != DutyEntropy || f[1].Duty != DutyClock {
		t.Errorf("failed steps %+v", f)
	}
	if s := resumeStep(res, DutyHostKeys); s.Status != "done" || len(res.HostKeys) == 0 {
		t.Errorf("host keys not made after the failures: %+v", s)
	}
	// A request that does not validate does nothing at all.
	bad := req
	bad.Entropy = nil
	res, err = Resume(context.Background(), bad, env)
	if err == nil || len(res.Steps) != 1 || res.Steps[0].Status != "failed" {
		t.Errorf("invalid request: %v %+v", err, res)
	}
}

func TestResumeNetworkReplacesTheParentsAddressAndMAC(t *testing.T) {
	ns := netnstest.New(t)
	h := netnstest.Handle(t, ns)
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "rs0"}}); err != nil {
		// No dummy driver: a veth whose peer lives in a namespace of its own.
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rs0"}, PeerName: "rs0p"}); err != nil {
			t.Skipf("cannot create a dummy or veth link: %v", err)
		}
		peer, err := h.LinkByName("rs0p")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetNsFd(peer, int(netnstest.New(t))); err != nil {
			t.Fatalf("move rs0p out of the way: %v", err)
		}
	}
	link, err := h.LinkByName("rs0")
	if err != nil {
		t.Fatal(err)
	}
	parent := &net.IPNet{IP: net.IPv4(172, 16, 0, 9), Mask: net.CIDRMask(24, 32)}
	extra := &net.IPNet{IP: net.IPv4(172, 16, 0, 10), Mask: net.CIDRMask(24, 32)}
	for _, a := range []*net.IPNet{parent, extra} {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}

	env, _ := resumeRoot(t)
	env.Netlink = h
	env.LinkWait = time.Second
	var macCalls []string
	env.SetMAC = func(h *netlink.Handle, l netlink.Link, mac net.HardwareAddr) error {
		macCalls = append(macCalls, l.Attrs().Name+" "+mac.String())
		return setMACNetlink(h, l, mac)
	}
	req := resumeRequest(t)
	req.Network = &proto.ResumedNetwork{
		Iface:   "rs0",
		MAC:     "02:fc:00:00:00:05",
		Address: netip.MustParsePrefix("172.16.0.5/24"),
		Gateway: netip.MustParseAddr("172.16.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("172.16.0.1")},
	}
	res, err := Resume(context.Background(), req, env)
	if err != nil {
		t.Fatalf("Resume: %v\n%+v", err, res)
	}
	if !slices.Equal(macCalls, []string{"rs0 02:fc:00:00:00:05"}) {
		t.Errorf("MAC hook calls %q", macCalls)
	}
	link, err = h.LinkByName("rs0")
	if err != nil {
		t.Fatal(err)
	}
	if got := link.Attrs().HardwareAddr.String(); got != "02:fc:00:00:00:05" {
		t.Errorf("MAC is %s", got)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.16.0.5/24" {
		t.Errorf("addresses %v, want only 172.16.0.5/24", addrs)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return isDefault(r) && r.Gw.Equal(net.IPv4(172, 16, 0, 1)) }) {
		t.Errorf("no default route via 172.16.0.1: %v", routes)
	}
	if got := resumeReadFile(t, filepath.Join(env.EtcDir, "resolv.conf")); !strings.Contains(got, "nameserver 172.16.0.1\n") {
		t.Errorf("resolv.conf:\n%s", got)
	}
	if s := resumeStep(res, DutyNetwork); s.Status != "done" || !strings.Contains(s.Detail, "removed 172.16.0.9/24") {
		t.Errorf("network step %+v", s)
	}

	// Again: nothing left to change on the link.
	macCalls = nil
	res, err = Resume(context.Background(), req, env)
	if err != nil || len(macCalls) != 0 || resumeStep(res, DutyNetwork).Status != "unchanged" {
		t.Errorf("repeat: %v, MAC calls %q, %+v", err, macCalls, resumeStep(res, DutyNetwork))
	}
}

func TestSystemAddEntropyRunsTheRealIoctls(t *testing.T) {
	testutil.NeedRoot(t, "add entropy to the kernel's pool (CAP_SYS_ADMIN)")
	seed := make([]byte, proto.MinResumeEntropy)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	// Adding entropy is all these ioctls do: safe on any host.
	if err := SystemAddEntropy(seed); err != nil {
		t.Fatalf("SystemAddEntropy: %v", err)
	}
	// Not a random device: the ioctl is refused and the error says which.
	if err := addEntropy("/dev/null", seed); err == nil || !strings.Contains(err.Error(), "RNDADDENTROPY on /dev/null") {
		t.Errorf("on /dev/null: %v", err)
	}
}

func TestReloadSSHDSignalsOnlySSHD(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "sshd.pid")
	if ok, err := ReloadSSHD(pidFile); ok || err != nil {
		t.Errorf("no pid file: %v, %v", ok, err)
	}
	// A pid file naming a process that is not sshd (this test) is stale.
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := ReloadSSHD(pidFile); ok || err != nil {
		t.Errorf("pid of a process not called sshd: %v, %v", ok, err)
	}
	if err := os.WriteFile(pidFile, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReloadSSHD(pidFile); err == nil {
		t.Error("a pid file of garbage was accepted")
	}
	// A process called sshd (sleep under that name) gets the SIGHUP.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep to stand in for sshd: %v", err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "sshd")
	if err := os.WriteFile(fake, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fake, "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run a copy of sleep from %s: %v", dir, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok, err := ReloadSSHD(pidFile)
	if !ok || err != nil {
		t.Fatalf("ReloadSSHD: %v, %v", ok, err)
	}
	werr := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || !strings.Contains(ee.String(), "hangup") {
		t.Errorf("the fake sshd ended with %v, want killed by SIGHUP", werr)
	}
}
