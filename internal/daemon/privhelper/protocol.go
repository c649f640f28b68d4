package privhelper

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// ProtocolVersion changes when a request or answer changes shape. 2: the
// network ops take a whole network (bridge, subnet, tap prefix, table);
// publish, unpublish and the snapshot ops were added; the bare loop ops
// went (snapshots attach their own loop devices).
const ProtocolVersion = 2

// MaxRequest bounds one request's size, and one answer's.
const MaxRequest = 64 << 10

// Operations a caller may ask for. Nothing else is accepted.
const (
	OpHello              = "hello"               // none
	OpEnsureNetwork      = "ensure_network"      // network
	OpTeardownNetwork    = "teardown_network"    // network
	OpCreateTap          = "create_tap"          // network, tap
	OpDeleteTap          = "delete_tap"          // network, tap
	OpPublish            = "publish"             // network, vm_id, host_port, guest
	OpUnpublish          = "unpublish"           // network, vm_id, host_port (0: all)
	OpSnapshotsAvailable = "snapshots_available" // none
	OpCreateSnapshot     = "create_snapshot"     // name, origin, cow_file, cow_size
	OpRemoveSnapshot     = "remove_snapshot"     // name
	OpListSnapshots      = "list_snapshots"      // none
)

// Request is one typed request. Fields its Op does not take must be empty.
type Request struct {
	Version int    `json:"version"`
	Op      string `json:"op"`
	// The network (every network op).
	Bridge    string `json:"bridge,omitempty"`
	Subnet    string `json:"subnet,omitempty"`
	TapPrefix string `json:"tap_prefix,omitempty"`
	Table     string `json:"table,omitempty"`
	DNSPort   int    `json:"dns_port,omitempty"`

	Tap      string `json:"tap,omitempty"`
	VMID     string `json:"vm_id,omitempty"`
	HostPort int    `json:"host_port,omitempty"`
	Guest    string `json:"guest,omitempty"` // IP:PORT

	Name    string `json:"name,omitempty"`
	Origin  string `json:"origin,omitempty"`
	COWFile string `json:"cow_file,omitempty"`
	COWSize int64  `json:"cow_size,omitempty"`
}

// Response answers a request.
type Response struct {
	OK        bool           `json:"ok"`
	Error     string         `json:"error,omitempty"`
	Code      string         `json:"code,omitempty"`    // "denied", "invalid", "failed"
	Version   string         `json:"version,omitempty"` // the helper's build, for hello
	Protocol  int            `json:"protocol,omitempty"`
	Reason    string         `json:"reason,omitempty"`    // snapshots_available: why not
	StateDir  string         `json:"state_dir,omitempty"` // hello: the caller's state dir, as the helper sees it
	Snapshots []SnapshotInfo `json:"snapshots,omitempty"`
}

// SnapshotInfo is a snapshot on the wire.
type SnapshotInfo struct {
	Name    string `json:"name"`
	Device  string `json:"device"`
	Origin  string `json:"origin,omitempty"`
	COWFile string `json:"cow_file,omitempty"`
	Sectors uint64 `json:"sectors,omitempty"`
}

// Error codes.
const (
	CodeDenied  = "denied"
	CodeInvalid = "invalid"
	CodeFailed  = "failed"
)

// Error is a refusal or failure answered by the helper.
type Error struct {
	Code, Msg string
	missing   bool // the path did not resolve (the helper does not say more)
}

func (e *Error) Error() string { return fmt.Sprintf("banger helper: %s: %s", e.Code, e.Msg) }

func denied(format string, a ...any) *Error {
	return &Error{Code: CodeDenied, Msg: fmt.Sprintf(format, a...)}
}
func invalid(format string, a ...any) *Error {
	return &Error{Code: CodeInvalid, Msg: fmt.Sprintf(format, a...)}
}

// decodeRequest parses one request strictly: unknown fields are refused,
// and so is any request but hello of another protocol version.
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
	// Hello is answered whatever the caller's protocol: its answer is how
	// a bangerd or doctor of another build learns the helper's.
	if r.Version != ProtocolVersion && r.Op != OpHello {
		return r, invalid("the caller speaks protocol version %d, the helper %d: install one build of banger for both and restart the helper (sudo systemctl restart banger-helper)", r.Version, ProtocolVersion)
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
