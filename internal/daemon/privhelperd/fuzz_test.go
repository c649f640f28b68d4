package privhelperd

import (
	"net/netip"
	"strings"
	"testing"

	"banger/internal/daemon/privhelper"
)

// FuzzRequest feeds arbitrary bytes, as a user's bangerd could send them, to
// the root helper's request decoder and its network policy: nothing may
// panic, and a network the policy accepts must be banger's own (its
// prefixes, a subnet of the range between /24 and /30, an unprivileged DNS
// port).
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"op":"hello"}`))
	f.Add([]byte(`{"version":1,"op":"network_up","bridge":"banger0","subnet":"10.200.1.0/24","tap_prefix":"bgtap","table":"banger_banger0","dns_port":5353}`))
	f.Add([]byte(`{"version":1,"op":"tap_create","tap":"bgtap1","vm_id":"abc123"}`))
	f.Add([]byte(`{"version":1,"op":"network_up","bridge":"eth0","subnet":"0.0.0.0/0","unknown":1}`))
	f.Add([]byte(`{"version":1}{"version":1}`))
	pol := DefaultPolicy(1000)
	rng := netip.MustParsePrefix("10.200.0.0/16")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := privhelper.DecodeRequest(data)
		if err != nil {
			return
		}
		_ = checkVMID(r.VMID)
		spec, err := pol.checkNetwork(1000, r)
		if err != nil {
			return
		}
		if !strings.HasPrefix(spec.Bridge, "banger") || !strings.HasPrefix(spec.TapPrefix, "bgtap") {
			t.Fatalf("accepted interfaces %q, %q", spec.Bridge, spec.TapPrefix)
		}
		if !rng.Contains(spec.Subnet.Addr()) || spec.Subnet.Bits() < 24 || spec.Subnet.Bits() > 30 {
			t.Fatalf("accepted subnet %s", spec.Subnet)
		}
		if spec.DNSPort != 0 && spec.DNSPort < 1024 {
			t.Fatalf("accepted privileged dns port %d for a user", spec.DNSPort)
		}
	})
}
