package privhelper

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// ProtocolVersion changes when a request or answer changes shape.
const ProtocolVersion = 1

// MaxRequest bounds one request's size.
const MaxRequest = 64 << 10

// Operations a caller may ask for. Nothing else is accepted.
const (
	OpHello          = "hello"
	OpEnsureBridge   = "ensure_bridge"     // Bridge, Subnet
	OpTeardownBridge = "teardown_bridge"   // Bridge
	OpCreateTap      = "create_tap"        // Tap, Bridge
	OpDeleteTap      = "delete_tap"        // Tap
	OpEnableForward  = "enable_ip_forward" // none
	OpLoopAttach     = "loop_attach"       // Path, ReadOnly
	OpLoopDetach     = "loop_detach"       // Device
)

// Request is one typed request. Fields not used by Op must be empty.
type Request struct {
	Version  int    `json:"version"`
	Op       string `json:"op"`
	Bridge   string `json:"bridge,omitempty"`
	Tap      string `json:"tap,omitempty"`
	Subnet   string `json:"subnet,omitempty"`
	Path     string `json:"path,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Device   string `json:"device,omitempty"`
}

// Response answers a request.
type Response struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Code    string `json:"code,omitempty"` // "denied", "invalid", "failed"
	Device  string `json:"device,omitempty"`
	Version string `json:"version,omitempty"` // helper's build version, for hello
}

// Error codes.
const (
	CodeDenied  = "denied"
	CodeInvalid = "invalid"
	CodeFailed  = "failed"
)

// Error is a refusal or failure answered by the helper.
type Error struct{ Code, Msg string }

func (e *Error) Error() string { return fmt.Sprintf("banger helper: %s: %s", e.Code, e.Msg) }

func denied(format string, a ...any) *Error  { return &Error{CodeDenied, fmt.Sprintf(format, a...)} }
func invalid(format string, a ...any) *Error { return &Error{CodeInvalid, fmt.Sprintf(format, a...)} }

// decodeRequest parses one request strictly: unknown fields are refused.
func decodeRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, invalid("request of %d bytes is over the %d byte limit", len(data), MaxRequest)
	}
	dec := json.NewDecoder(bytesReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, invalid("malformed request: %v", err)
	}
	if dec.More() {
		return r, invalid("malformed request: more than one JSON value")
	}
	if r.Version != ProtocolVersion {
		return r, invalid("protocol version %d, the helper speaks %d: restart the helper so both come from one build", r.Version, ProtocolVersion)
	}
	return r, nil
}

func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return netip.Prefix{}, invalid("subnet %q is not an IPv4 network address with a prefix length", s)
	}
	return p, nil
}
