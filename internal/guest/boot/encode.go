package boot

import (
	"strconv"
	"strings"

	"banger/internal/guest/proto"
)

// Param is the prefix of every kernel parameter the agent reads.
const Param = "banger."

// Cmdline encodes s as the banger.* kernel parameters ParseCmdline reads
// back, blank-separated, in a fixed order. What equals the default of an
// empty command line is left out, except the transport, which is always
// said. Values never need quoting: host names, addresses and interface
// names hold no blanks once valid, and keys are base64url. Warnings are
// not encoded.
//
// For valid settings ParseCmdline(s.Cmdline()) returns s again; the host
// builds a guest's command line only through this, so the two sides of the
// format live in one file each, side by side.
func (s Settings) Cmdline() string {
	var out []string
	add := func(name, val string) { out = append(out, Param+name+"="+val) }
	if s.Hostname != "" {
		add("hostname", s.Hostname)
	}
	if s.Addr.IsValid() {
		add("ip", s.Addr.String())
	}
	if s.Gateway.IsValid() {
		add("gw", s.Gateway.String())
	}
	if len(s.DNS) > 0 {
		dns := make([]string, len(s.DNS))
		for i, a := range s.DNS {
			dns[i] = a.String()
		}
		add("dns", strings.Join(dns, ","))
	}
	if s.MTU != 0 {
		add("mtu", strconv.Itoa(s.MTU))
	}
	if s.Iface != "" {
		add("iface", s.Iface)
	}
	t := s.Transport
	if t == "" {
		t = TransportVsock
	}
	add("transport", string(t))
	if s.Port != 0 && s.Port != proto.DefaultPort {
		add("port", strconv.FormatUint(uint64(s.Port), 10))
	}
	for _, k := range s.SSHKeys {
		add("ssh_key", EncodeSSHKey(k))
	}
	if !s.Grow {
		add("grow", "0")
	}
	return strings.Join(out, " ")
}
