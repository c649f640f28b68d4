package netmgr

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestResolvers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain", "# comment\nsearch example.com\nnameserver 192.0.2.1 # trailing\nnameserver  fe80::1%eth0\nnameserver 192.0.2.1\n;nameserver 192.0.2.9\nnameserver 127.0.0.1\nnameserver 198.51.100.7\nnameserver bogus\n")
	stub := write("stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	upstream := write("upstream", "nameserver 203.0.113.5\nnameserver 2001:db8::1\nnameserver 203.0.113.6\n")
	many := write("many", "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n")
	missing := filepath.Join(dir, "missing")
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tc := range []struct {
		name           string
		conf, resolved string
		want           []netip.Addr
	}{
		{"plain: IPv4 only, deduplicated, loopback dropped", plain, upstream, addrs("192.0.2.1", "198.51.100.7")},
		{"stub maps to resolved's upstream", stub, upstream, addrs("203.0.113.5", "203.0.113.6")},
		{"stub without resolved's file gives nothing (gateway fallback)", stub, missing, nil},
		{"missing resolv.conf", missing, upstream, nil},
		{"at most three", many, upstream, addrs("192.0.2.1", "192.0.2.2", "192.0.2.3")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Resolvers(tc.conf, tc.resolved); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if got := HostResolvers(plain); !slices.Equal(got, addrs("192.0.2.1", "198.51.100.7")) {
		t.Errorf("HostResolvers = %v", got)
	}
}

func FuzzParseNameservers(f *testing.F) {
	f.Add([]byte("nameserver 1.2.3.4\n"))
	f.Add([]byte("nameserver ::ffff:10.0.0.1\nnameserver 0.0.0.0\n"))
	f.Add([]byte("nameserver\n#nameserver 1.1.1.1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, a := range parseNameservers(data) {
			if !a.Is4() || a.IsUnspecified() {
				t.Fatalf("returned %v", a)
			}
		}
	})
}
