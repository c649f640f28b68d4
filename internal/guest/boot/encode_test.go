package boot

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"banger/internal/guest/proto"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"

func TestCmdlineRoundTrip(t *testing.T) {
	for _, s := range []Settings{
		Defaults(),
		{Transport: TransportSerial, Port: proto.DefaultPort, Grow: true},
		{Hostname: "web-1", Addr: netip.MustParsePrefix("172.16.0.2/24"), Gateway: netip.MustParseAddr("172.16.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("2001:db8::1")}, MTU: 1400,
			Iface: "eth0", Transport: TransportVsock, Port: 5000, SSHKeys: []string{testKey, testKey}, Grow: false},
	} {
		line := s.Cmdline()
		got, err := ParseCmdline("root=/dev/vda rw " + line + " -- ignored banger.hostname=x")
		if err != nil {
			t.Fatalf("ParseCmdline(%q): %v", line, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip of %q:\n got %+v\nwant %+v", line, got, s)
		}
	}
}

func TestCmdlineLeavesDefaultsOut(t *testing.T) {
	if got := Defaults().Cmdline(); got != "banger.transport=vsock" {
		t.Errorf("Defaults().Cmdline() = %q", got)
	}
	// The zero value says the same as the defaults, less the grow.
	if got := (Settings{}).Cmdline(); got != "banger.transport=vsock banger.grow=0" {
		t.Errorf("Settings{}.Cmdline() = %q", got)
	}
}

// FuzzCmdlineRoundTrip: whatever ParseCmdline makes of a line, encoding it
// and parsing again gives the same settings.
func FuzzCmdlineRoundTrip(f *testing.F) {
	f.Add("banger.hostname=a banger.ip=10.0.0.2/8 banger.dns=1.1.1.1,::1 banger.grow=0")
	f.Add("banger.transport=serial banger.port=7 banger.mtu=9000 banger.iface=eth1")
	f.Add(`banger.ssh_key=` + EncodeSSHKey(testKey) + ` "banger.hostname=x y"`)
	f.Fuzz(func(t *testing.T, line string) {
		s, _ := ParseCmdline(line)
		s.Warnings = nil
		again, err := ParseCmdline(s.Cmdline())
		if err != nil {
			t.Fatalf("encoded %+v as %q, which does not parse: %v", s, s.Cmdline(), err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("%q -> %+v -> %q -> %+v", line, s, s.Cmdline(), again)
		}
		if strings.ContainsAny(s.Cmdline(), "\"\n\t") {
			t.Fatalf("encoded line needs quoting: %q", s.Cmdline())
		}
	})
}
