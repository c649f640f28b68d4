package boot

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"banger/internal/guest/initrd"
	"banger/internal/guest/proto"

	"golang.org/x/crypto/ssh"
)

// Transport is how the agent reaches the host.
type Transport string

// The transports the agent supports.
const (
	TransportVsock  Transport = "vsock"  // AF_VSOCK (Firecracker, QEMU with vhost-vsock)
	TransportSerial Transport = "serial" // a virtio-serial port with a multiplexer (QEMU)
)

// Settings are a guest's per-VM settings. The zero value asks Apply to do
// nothing but write the ready marker; ParseCmdline fills in the defaults.
type Settings struct {
	// Hostname is the guest's host name; empty leaves it alone.
	Hostname string
	// Addr is the interface's IPv4 address with its prefix length; the zero
	// Prefix configures no address.
	Addr netip.Prefix
	// Gateway is the default route's IPv4 gateway; the zero Addr adds no
	// route.
	Gateway netip.Addr
	// DNS lists the name servers for /etc/resolv.conf; empty leaves the
	// file alone.
	DNS []netip.Addr
	// MTU of the interface; zero leaves it alone.
	MTU int
	// Iface names the interface to configure; empty means the first
	// non-loopback link with an Ethernet address.
	Iface string
	// Transport and Port say where the agent listens.
	Transport Transport
	Port      uint32
	// SSHKeys are authorized_keys lines for root, one key each.
	SSHKeys []string
	// Grow asks for the root filesystem to be grown to fill its device.
	Grow bool
	// Warnings lists banger.* parameters that were ignored because this
	// agent does not know them (a newer host may send more).
	Warnings []string
}

// Networked reports whether s asks for any network configuration.
func (s Settings) Networked() bool {
	return s.Addr.IsValid() || s.Gateway.IsValid() || s.MTU != 0 || s.Iface != ""
}

// Defaults returns the settings of an empty command line.
func Defaults() Settings {
	return Settings{Transport: TransportVsock, Port: proto.DefaultPort, Grow: true}
}

// ParseCmdline parses a kernel command line (the contents of /proc/cmdline)
// for banger.* parameters. Double quotes group blanks into one parameter as
// the kernel does and are removed; everything after a lone "--" belongs to
// init and is ignored. Other parameters are ignored, unknown banger.* ones
// with a warning in Settings.Warnings. When a parameter repeats, the last
// one wins, except banger.ssh_key, which adds a key each time.
//
// A malformed value is an error naming the parameter. The error joins every
// malformed parameter, and the returned Settings still holds all the others
// (a malformed one keeps its default), so that a guest at boot can apply
// what it can and report the rest.
func ParseCmdline(s string) (Settings, error) {
	st := Defaults()
	var errs []error
	keyIndex := 0
	for _, arg := range initrd.SplitCmdline(s) {
		if arg == "--" {
			break
		}
		name, val, hasVal := strings.Cut(arg, "=")
		field, ok := strings.CutPrefix(name, Param)
		if !ok {
			continue
		}
		what := name
		if field == "ssh_key" {
			keyIndex++
			what = fmt.Sprintf("%s #%d", name, keyIndex)
		}
		set, known := cmdlineParams[field]
		if !known {
			st.Warnings = append(st.Warnings, fmt.Sprintf("kernel parameter %s is not known to this agent; ignored", name))
			continue
		}
		if !hasVal || val == "" {
			errs = append(errs, fmt.Errorf("kernel parameter %s: needs a value (%s=...)", what, name))
			continue
		}
		if err := set(&st, val); err != nil {
			errs = append(errs, fmt.Errorf("kernel parameter %s: %v", what, err))
		}
	}
	return st, errors.Join(errs...)
}

// cmdlineParams maps each banger.* parameter this agent knows (without
// the prefix) to the function that parses its value into Settings. A
// setter that fails leaves Settings as it was, and its error says what is
// wrong with the value; ParseCmdline adds the parameter's name.
var cmdlineParams = map[string]func(st *Settings, val string) error{
	"hostname":  paramHostname,
	"ip":        paramIP,
	"gw":        paramGateway,
	"dns":       paramDNS,
	"mtu":       paramMTU,
	"iface":     paramIface,
	"transport": paramTransport,
	"port":      paramPort,
	"ssh_key":   paramSSHKey,
	"grow":      paramGrow,
}

// paramHostname parses banger.hostname.
func paramHostname(st *Settings, val string) error {
	if err := ValidHostname(val); err != nil {
		return err
	}
	st.Hostname = val
	return nil
}

// paramIP parses banger.ip: an IPv4 address with a non-zero prefix length.
func paramIP(st *Settings, val string) error {
	p, err := netip.ParsePrefix(val)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("%q is not an IPv4 address with a prefix length, like 172.16.0.2/24", val)
	}
	if p.Bits() == 0 {
		return fmt.Errorf("prefix length of %q must be 1 to 32", val)
	}
	st.Addr = p
	return nil
}

// paramGateway parses banger.gw: an IPv4 address.
func paramGateway(st *Settings, val string) error {
	a, err := netip.ParseAddr(val)
	if err != nil || !a.Is4() {
		return fmt.Errorf("%q is not an IPv4 address, like 172.16.0.1", val)
	}
	st.Gateway = a
	return nil
}

// paramDNS parses banger.dns: a comma-separated list of IP addresses
// without zones.
func paramDNS(st *Settings, val string) error {
	var list []netip.Addr
	for _, part := range strings.Split(val, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%q is not an IP address (want IP[,IP...])", part)
		}
		list = append(list, a.Unmap())
	}
	st.DNS = list
	return nil
}

// paramMTU parses banger.mtu: 68 to 65535.
func paramMTU(st *Settings, val string) error {
	n, err := strconv.Atoi(val)
	if err != nil || n < 68 || n > 65535 {
		return fmt.Errorf("%q is not an MTU from 68 to 65535", val)
	}
	st.MTU = n
	return nil
}

// paramIface parses banger.iface: an interface name.
func paramIface(st *Settings, val string) error {
	if err := validIfaceName(val); err != nil {
		return err
	}
	st.Iface = val
	return nil
}

// paramTransport parses banger.transport: vsock or serial.
func paramTransport(st *Settings, val string) error {
	switch Transport(val) {
	case TransportVsock, TransportSerial:
		st.Transport = Transport(val)
		return nil
	}
	return fmt.Errorf("%q is not a transport (want vsock or serial)", val)
}

// paramPort parses banger.port: a vsock port from 1 to 4294967294.
func paramPort(st *Settings, val string) error {
	n, err := strconv.ParseUint(val, 10, 32)
	if err != nil || n == 0 || n == 0xFFFFFFFF {
		return fmt.Errorf("%q is not a vsock port from 1 to 4294967294", val)
	}
	st.Port = uint32(n)
	return nil
}

// paramSSHKey parses one banger.ssh_key and adds its key.
func paramSSHKey(st *Settings, val string) error {
	line, err := DecodeSSHKey(val)
	if err != nil {
		return err
	}
	st.SSHKeys = append(st.SSHKeys, line)
	return nil
}

// paramGrow parses banger.grow: 1/yes/true/on or 0/no/false/off.
func paramGrow(st *Settings, val string) error {
	switch val {
	case "1", "yes", "true", "on":
		st.Grow = true
	case "0", "no", "false", "off":
		st.Grow = false
	default:
		return fmt.Errorf("%q is not 0 or 1", val)
	}
	return nil
}

// EncodeSSHKey turns an authorized_keys line into the value of a
// banger.ssh_key kernel parameter: base64url without padding, so that it
// holds no blanks, quotes or '=' for the kernel's parser to trip on.
func EncodeSSHKey(line string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.TrimSpace(line)))
}

// DecodeSSHKey turns a banger.ssh_key value back into an authorized_keys
// line and checks that it holds exactly one valid key.
func DecodeSSHKey(val string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(val, "="))
	if err != nil {
		return "", fmt.Errorf("value is not base64url: %v", err)
	}
	line := strings.TrimSpace(string(raw))
	if err := ValidKeyLine(line); err != nil {
		return "", err
	}
	return line, nil
}

// ValidKeyLine checks that line is one authorized_keys line holding a key
// that parses.
func ValidKeyLine(line string) error {
	if line == "" {
		return errors.New("the key is empty")
	}
	if strings.ContainsAny(line, "\r\n\x00") {
		return errors.New("the key spans more than one line")
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
		return fmt.Errorf("not an authorized_keys line: %v", err)
	}
	return nil
}

// ValidHostname checks that name is a host name the kernel and resolvers
// accept: at most 64 characters, dot-separated labels of 1 to 63 letters,
// digits and hyphens, none starting or ending with a hyphen.
func ValidHostname(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("host name %q must be 1 to 64 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host name %q has an empty or over-long label", name)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name %q has a label starting or ending with '-'", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host name %q may hold only letters, digits, '-' and '.'", name)
			}
		}
	}
	return nil
}

// validIfaceName checks that name is a Linux interface name.
func validIfaceName(name string) error {
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/ \t\n:\x00") {
		return fmt.Errorf("%q is not an interface name (1 to 15 characters, no '/', ':' or blanks)", name)
	}
	return nil
}
