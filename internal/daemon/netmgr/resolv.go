package netmgr

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// SystemdResolvedConf is where systemd-resolved lists its upstream servers.
const SystemdResolvedConf = "/run/systemd/resolve/resolv.conf"

// resolvedStub is the address of systemd-resolved's local stub listener.
var resolvedStub = netip.MustParseAddr("127.0.0.53")

// maxResolvers is what a guest's libc will use (MAXNS).
const maxResolvers = 3

// HostResolvers returns the IPv4 name servers of the resolver file
// resolvConf (normally /etc/resolv.conf) that a guest can reach. The
// systemd-resolved stub 127.0.0.53 is replaced by resolved's upstream
// servers from SystemdResolvedConf; other loopback servers are dropped,
// since a guest cannot reach the host's loopback. A nil result means
// nothing usable: Attach then hands guests the gateway, which works when a
// resolver on the host listens on the bridge address.
func HostResolvers(resolvConf string) []netip.Addr {
	return Resolvers(resolvConf, SystemdResolvedConf)
}

// Resolvers is HostResolvers with the systemd-resolved upstream file given.
func Resolvers(resolvConf, resolvedConf string) []netip.Addr {
	data, err := os.ReadFile(resolvConf)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range parseNameservers(data) {
		if a == resolvedStub {
			if up, err := os.ReadFile(resolvedConf); err == nil {
				for _, u := range parseNameservers(up) {
					if !u.IsLoopback() {
						out = appendUnique(out, u)
					}
				}
			}
			continue
		}
		if !a.IsLoopback() {
			out = appendUnique(out, a)
		}
	}
	if len(out) > maxResolvers {
		out = out[:maxResolvers]
	}
	return out
}

func appendUnique(s []netip.Addr, a netip.Addr) []netip.Addr {
	for _, b := range s {
		if a == b {
			return s
		}
	}
	return append(s, a)
}

// parseNameservers returns the IPv4 addresses of the "nameserver" lines of
// a resolv.conf, in order, ignoring anything it cannot parse.
func parseNameservers(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		a = a.Unmap()
		if !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		out = append(out, a)
	}
	return out
}
