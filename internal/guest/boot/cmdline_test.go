package boot

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"banger/internal/guest/proto"

	"golang.org/x/crypto/ssh"
)

// newKeyLine returns a fresh authorized_keys line with the given comment.
func newKeyLine(t testing.TB, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

func TestParseCmdlineDefaults(t *testing.T) {
	st, err := ParseCmdline("console=ttyS0 root=/dev/vda rw quiet\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Transport: TransportVsock, Port: proto.DefaultPort, Grow: true}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	if st.Networked() {
		t.Fatal("an empty command line should ask for no network changes")
	}
}

func TestParseCmdline(t *testing.T) {
	k1 := newKeyLine(t, "alice@laptop")
	k2 := `no-pty,command="echo hi there" ` + newKeyLine(t, "")
	cmd := `console=ttyS0 banger.hostname=web-1 banger.ip=172.16.0.2/24 banger.gw=172.16.0.1 ` +
		`banger.dns=1.1.1.1,2606:4700:4700::1111 banger.mtu=1400 banger.iface=ens3 ` +
		`banger.transport=serial banger.port=5000 banger.grow=0 ` +
		`banger.ssh_key=` + EncodeSSHKey(k1) + ` "banger.ssh_key=` + EncodeSSHKey(k2) + `"` +
		` banger.future=1 -- banger.hostname=ignored`
	st, err := ParseCmdline(cmd)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		Hostname:  "web-1",
		Addr:      netip.MustParsePrefix("172.16.0.2/24"),
		Gateway:   netip.MustParseAddr("172.16.0.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700:4700::1111")},
		MTU:       1400,
		Iface:     "ens3",
		Transport: TransportSerial,
		Port:      5000,
		SSHKeys:   []string{k1, k2},
		Grow:      false,
	}
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "banger.future") {
		t.Fatalf("warnings = %q, want one naming banger.future", st.Warnings)
	}
	st.Warnings = nil
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got  %+v\nwant %+v", st, want)
	}
}

func TestParseCmdlineQuotesAndRepeats(t *testing.T) {
	// Quotes may wrap a whole parameter or only its value; the last
	// repeat wins.
	st, err := ParseCmdline(`banger.hostname="first" "banger.hostname=second" banger.dns="8.8.8.8,9.9.9.9"`)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hostname != "second" {
		t.Errorf("hostname = %q, want second", st.Hostname)
	}
	if len(st.DNS) != 2 || st.DNS[1].String() != "9.9.9.9" {
		t.Errorf("dns = %v", st.DNS)
	}
	// A quoted blank keeps a parameter in one piece, and then it is a
	// malformed host name, not two parameters.
	_, err = ParseCmdline(`"banger.hostname=a b"`)
	if err == nil || !strings.Contains(err.Error(), "banger.hostname") {
		t.Fatalf("err = %v, want one naming banger.hostname", err)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	goodKey := EncodeSSHKey(newKeyLine(t, ""))
	cases := []struct {
		cmdline string
		wantErr string
	}{
		{"banger.hostname=-bad", "banger.hostname"},
		{"banger.hostname=" + strings.Repeat("a", 65), "banger.hostname"},
		{"banger.hostname=a_b", "banger.hostname"},
		{"banger.hostname", "banger.hostname"},
		{"banger.ip=172.16.0.2", "banger.ip"},
		{"banger.ip=172.16.0.2/33", "banger.ip"},
		{"banger.ip=172.16.0.2/0", "banger.ip"},
		{"banger.ip=fd00::2/64", "banger.ip"},
		{"banger.gw=172.16.0.300", "banger.gw"},
		{"banger.gw=", "banger.gw"},
		{"banger.dns=1.1.1.1,,8.8.8.8", "banger.dns"},
		{"banger.dns=fe80::1%eth0", "banger.dns"},
		{"banger.mtu=67", "banger.mtu"},
		{"banger.mtu=9k", "banger.mtu"},
		{"banger.iface=a/b", "banger.iface"},
		{"banger.iface=averyveryverylongname", "banger.iface"},
		{"banger.transport=tcp", "banger.transport"},
		{"banger.port=0", "banger.port"},
		{"banger.port=4294967296", "banger.port"},
		{"banger.grow=maybe", "banger.grow"},
		{"banger.ssh_key=" + goodKey + " banger.ssh_key=!!!", "banger.ssh_key #2"},
		{"banger.ssh_key=" + EncodeSSHKey("ssh-ed25519 notbase64"), "banger.ssh_key #1"},
		{"banger.ssh_key=" + EncodeSSHKey(newKeyLine(t, "")+"\n"+newKeyLine(t, "")), "banger.ssh_key #1"},
	}
	for _, c := range cases {
		st, err := ParseCmdline("banger.mtu=1500 " + c.cmdline)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ParseCmdline(%q): err = %v, want one naming %s", c.cmdline, err, c.wantErr)
			continue
		}
		// The other parameters still parse.
		if st.MTU != 1500 && c.wantErr != "banger.mtu" {
			t.Errorf("ParseCmdline(%q) lost banger.mtu: %+v", c.cmdline, st)
		}
	}
}

func TestParseCmdlineKeepsGoodParamsBesideBadOnes(t *testing.T) {
	st, err := ParseCmdline("banger.ip=nonsense banger.hostname=ok banger.port=99999999999")
	if err == nil || !strings.Contains(err.Error(), "banger.ip") || !strings.Contains(err.Error(), "banger.port") {
		t.Fatalf("err = %v, want both bad params named", err)
	}
	if st.Hostname != "ok" || st.Addr.IsValid() || st.Port != proto.DefaultPort {
		t.Fatalf("settings = %+v, want the hostname kept and the bad ones at their defaults", st)
	}
}

func TestSSHKeyEncodingRoundTrip(t *testing.T) {
	line := `from="10.0.0.0/8" ` + newKeyLine(t, "dev box")
	enc := EncodeSSHKey(line)
	if strings.ContainsAny(enc, ` "=+/`) {
		t.Fatalf("encoded key %q holds characters the kernel command line mangles", enc)
	}
	got, err := DecodeSSHKey(enc)
	if err != nil || got != line {
		t.Fatalf("DecodeSSHKey = %q, %v; want %q", got, err, line)
	}
	// Padding added by a lenient encoder is tolerated.
	if got, err := DecodeSSHKey(enc + "=="); err != nil || got != line {
		t.Fatalf("DecodeSSHKey with padding = %q, %v", got, err)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 banger.hostname=web-1 banger.ip=172.16.0.2/24 banger.gw=172.16.0.1")
	f.Add(`"banger.dns=1.1.1.1,8.8.8.8" banger.mtu=1400 banger.transport=serial banger.port=1024`)
	f.Add("banger.ssh_key=" + EncodeSSHKey(newKeyLine(f, "seed")) + " banger.grow=0 -- x")
	f.Add(`banger.iface="eth0 banger.unknown=1 "" banger.=`)
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseCmdline(s)
		if st.Transport != TransportVsock && st.Transport != TransportSerial {
			t.Fatalf("transport %q", st.Transport)
		}
		if st.Port == 0 {
			t.Fatal("port 0")
		}
		if st.Hostname != "" && ValidHostname(st.Hostname) != nil {
			t.Fatalf("invalid host name %q accepted", st.Hostname)
		}
		if st.Addr.IsValid() && (!st.Addr.Addr().Is4() || st.Addr.Bits() < 1) {
			t.Fatalf("bad address %v accepted", st.Addr)
		}
		if st.MTU != 0 && (st.MTU < 68 || st.MTU > 65535) {
			t.Fatalf("bad MTU %d accepted", st.MTU)
		}
		for _, k := range st.SSHKeys {
			if ValidKeyLine(k) != nil || strings.Contains(k, "\n") {
				t.Fatalf("bad key %q accepted", k)
			}
		}
		if err == nil && !strings.Contains(strings.ReplaceAll(s, `"`, ""), "banger.") && !reflect.DeepEqual(st, Defaults()) {
			t.Fatalf("a command line without banger.* changed the settings: %+v", st)
		}
	})
}
