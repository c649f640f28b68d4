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
// names hold no blanks once valid, and keys are base64url. A host name,
// interface or transport that is not valid is left out, as ParseCmdline
// would refuse it: a value with a blank would otherwise add a parameter
// of its own to the guest's command line. Warnings are not encoded.
//
// For valid settings ParseCmdline(s.Cmdline()) returns s again; the host
// builds a guest's command line only through this, so the two sides of the
// format live in one file each, side by side.
func (s Settings) Cmdline() string {
	var out []string
	add := func(name, val string) { out = append(out, Param+name+"="+val) }
	if s.Hostname != "" && ValidHostname(s.Hostname) == nil {
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
	if s.Iface != "" && validIfaceName(s.Iface) == nil {
		add("iface", s.Iface)
	}
	switch t := s.Transport; t {
	case "":
		add("transport", string(TransportVsock))
	case TransportVsock, TransportSerial:
		add("transport", string(t))
	}
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
