package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// CapResume is announced by an agent that serves TypeResumed.
const CapResume = "resume"

// Bounds of a resumed request and of its answer. The answer comes from a
// guest, which the host does not trust: it is refused when it is larger.
const (
	MinResumeEntropy  = 64   // bytes of host randomness a resumed request carries at least
	MaxResumeEntropy  = 4096 // and at most (the kernel's input pool is 256 bytes)
	maxResumeID       = 64
	maxResumeDNS      = 8
	maxResumeSteps    = 16
	maxResumeText     = 1024
	maxResumeHostKeys = 8
	maxHostKeyLine    = 16 << 10
)

// ResumedRequest tells the agent of a VM resumed from a snapshot (a clone)
// who it now is. The agent applies every part, the entropy first, and
// answers with a ResumedResult. Sending the same request again is harmless:
// the host keys made for ID are kept, and the clock is not stepped back.
type ResumedRequest struct {
	// ID names this clone (the VM's id). A request whose ID is the one
	// applied last keeps the host keys that request made.
	ID string `json:"id"`
	// Hostname is the clone's new host name; empty leaves it alone.
	Hostname string `json:"hostname,omitempty"`
	// Network is the clone's new network; nil leaves it alone.
	Network *ResumedNetwork `json:"network,omitempty"`
	// UnixNano is the host's wall-clock time when it sent the request.
	UnixNano int64 `json:"unix_nano"`
	// Entropy is fresh randomness from the host (MinResumeEntropy to
	// MaxResumeEntropy bytes), mixed into the guest kernel's pool and
	// credited before the pool is reseeded.
	Entropy []byte `json:"entropy"`
}

// ResumedNetwork is a clone's new network settings.
type ResumedNetwork struct {
	// Iface names the interface; empty means the first one with an
	// Ethernet address, as at boot.
	Iface string `json:"iface,omitempty"`
	// MAC is the address the host gave the clone's NIC, e.g.
	// "02:fc:00:00:00:05"; empty leaves the interface's address alone.
	MAC string `json:"mac,omitempty"`
	// Address is the IPv4 address with its prefix length, e.g.
	// "172.16.0.5/24". Every other IPv4 address on the interface (the
	// parent's) is removed.
	Address netip.Prefix `json:"address"`
	// Gateway is the default route's gateway; the zero value adds none.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// DNS lists the name servers written to /etc/resolv.conf; empty
	// leaves the file alone.
	DNS []netip.Addr `json:"dns,omitempty"`
}

// Time returns the host's time the request carries.
func (r ResumedRequest) Time() time.Time { return time.Unix(0, r.UnixNano) }

// Validate checks the request for values the agent cannot act on.
func (r ResumedRequest) Validate() error {
	if err := validID(r.ID); err != nil {
		return err
	}
	if r.Hostname != "" {
		if err := validHostname(r.Hostname); err != nil {
			return err
		}
	}
	if r.UnixNano <= 0 {
		return fmt.Errorf("resumed: the host's time %d is not after 1970", r.UnixNano)
	}
	if n := len(r.Entropy); n < MinResumeEntropy || n > MaxResumeEntropy {
		return fmt.Errorf("resumed: %d bytes of entropy, want %d to %d", n, MinResumeEntropy, MaxResumeEntropy)
	}
	if r.Network != nil {
		return r.Network.validate()
	}
	return nil
}

func (n ResumedNetwork) validate() error {
	if n.Iface != "" && (len(n.Iface) > 15 || strings.ContainsAny(n.Iface, "/ \t\n\x00:")) {
		return fmt.Errorf("resumed: %q is not an interface name", n.Iface)
	}
	if n.MAC != "" {
		if _, err := ParseMAC(n.MAC); err != nil {
			return err
		}
	}
	if !n.Address.IsValid() || !n.Address.Addr().Is4() || n.Address.Addr().IsUnspecified() || n.Address.Bits() == 0 {
		return fmt.Errorf("resumed: network address %q is not an IPv4 address with a prefix length", n.Address)
	}
	if n.Gateway.IsValid() && (!n.Gateway.Is4() || n.Gateway.IsUnspecified()) {
		return fmt.Errorf("resumed: gateway %s is not an IPv4 address", n.Gateway)
	}
	if len(n.DNS) > maxResumeDNS {
		return fmt.Errorf("resumed: %d name servers, at most %d", len(n.DNS), maxResumeDNS)
	}
	for _, d := range n.DNS {
		if !d.IsValid() || d.IsUnspecified() || d.Zone() != "" {
			return fmt.Errorf("resumed: name server %q is not an IP address", d)
		}
	}
	return nil
}

// ParseMAC parses a unicast Ethernet address in its colon form.
func ParseMAC(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 || !strings.Contains(s, ":") {
		return nil, fmt.Errorf("resumed: %q is not an Ethernet address like 02:fc:00:00:00:05", s)
	}
	if hw[0]&1 != 0 || string(hw) == "\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("resumed: %s is not a unicast Ethernet address", s)
	}
	return hw, nil
}

func validID(id string) error {
	if id == "" || len(id) > maxResumeID {
		return fmt.Errorf("resumed: the clone's id must be 1 to %d bytes, got %d", maxResumeID, len(id))
	}
	for _, c := range id {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("resumed: the clone's id %q may only hold letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// validHostname is the check boot.ValidHostname makes (RFC 1123 labels),
// repeated here because boot imports this package.
func validHostname(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("resumed: host name of %d bytes, at most 64", len(name))
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("resumed: %q is not a valid host name", name)
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return fmt.Errorf("resumed: %q is not a valid host name", name)
			}
		}
	}
	return nil
}

// DecodeResumedRequest parses and validates a resumed request's payload.
// A payload that does not parse is a *MalformedFrameError; values the
// agent cannot act on are a bad-request *RemoteError.
func DecodeResumedRequest(p []byte) (ResumedRequest, error) {
	var r ResumedRequest
	if err := json.Unmarshal(p, &r); err != nil {
		return ResumedRequest{}, malformed("resumed payload is not valid JSON: %v", err)
	}
	if err := r.Validate(); err != nil {
		return ResumedRequest{}, Errorf(CodeBadRequest, "%v", err)
	}
	return r, nil
}

// The statuses of a resumed duty, as boot reports them.
const (
	ResumeDone      = "done"
	ResumeUnchanged = "unchanged"
	ResumeSkipped   = "skipped"
	ResumeFailed    = "failed"
)

// ResumedStep is what one duty of a resume did.
type ResumedStep struct {
	Duty   string `json:"duty"`
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ResumedResult is the agent's answer to a resumed request: one step per
// duty, and the guest's SSH host public keys (authorized_keys lines) as
// they are after the resume, for the host's known_hosts.
type ResumedResult struct {
	Steps    []ResumedStep `json:"steps"`
	HostKeys []string      `json:"host_keys,omitempty"`
}

// Failed returns the steps that failed.
func (r ResumedResult) Failed() []ResumedStep {
	var out []ResumedStep
	for _, s := range r.Steps {
		if s.Status == ResumeFailed {
			out = append(out, s)
		}
	}
	return out
}

// DecodeResumedResult parses a resumed answer from a guest, which is not
// trusted: counts and lengths are bounded, text is made printable, and
// every host key must parse as an SSH public key.
func DecodeResumedResult(p []byte) (ResumedResult, error) {
	var r ResumedResult
	if err := json.Unmarshal(p, &r); err != nil {
		return ResumedResult{}, malformed("resumed answer is not valid JSON: %v", err)
	}
	if len(r.Steps) == 0 || len(r.Steps) > maxResumeSteps {
		return ResumedResult{}, malformed("resumed answer has %d steps, want 1 to %d", len(r.Steps), maxResumeSteps)
	}
	for i, s := range r.Steps {
		switch s.Status {
		case ResumeDone, ResumeUnchanged, ResumeSkipped, ResumeFailed:
		default:
			return ResumedResult{}, malformed("resumed answer: step %d has status %q", i+1, printable(s.Status, 32))
		}
		if s.Status == ResumeFailed && s.Error == "" {
			s.Error = "failed without saying why"
		}
		r.Steps[i] = ResumedStep{
			Duty:   printable(s.Duty, 64),
			Status: s.Status,
			Detail: printable(s.Detail, maxResumeText),
			Error:  printable(s.Error, maxResumeText),
		}
	}
	if len(r.HostKeys) > maxResumeHostKeys {
		return ResumedResult{}, malformed("resumed answer has %d host keys, at most %d", len(r.HostKeys), maxResumeHostKeys)
	}
	for i, k := range r.HostKeys {
		if err := validHostKey(k); err != nil {
			return ResumedResult{}, malformed("resumed answer: host key %d: %v", i+1, err)
		}
	}
	return r, nil
}

func validHostKey(line string) error {
	if len(line) > maxHostKeyLine {
		return fmt.Errorf("%d bytes, at most %d", len(line), maxHostKeyLine)
	}
	if strings.ContainsAny(line, "\n\r") {
		return errors.New("holds a line break")
	}
	_, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return fmt.Errorf("not an SSH public key: %v", err)
	}
	if len(opts) != 0 || len(strings.TrimSpace(string(rest))) != 0 {
		return errors.New("not a single bare public key")
	}
	return nil
}
