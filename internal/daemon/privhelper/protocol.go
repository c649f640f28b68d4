package privhelper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ProtocolVersion changes when a request or answer changes shape. 2: the
// network ops take a whole network (bridge, subnet, tap prefix, table);
// publish, unpublish and the snapshot ops were added; the bare loop ops
// went (snapshots attach their own loop devices).
const ProtocolVersion = 2

// MaxRequest bounds one request's size, and one answer's.
const MaxRequest = 64 << 10

// DefaultSocket is where the helper listens.
const DefaultSocket = "/run/banger/helper.sock"

// How long the helper gives one request: RequestTimeout to do it (then
// the request is cancelled), AnswerTimeout more for the caller to take
// the answer. A client waits at least their sum, so that the helper's
// answer, even that the request timed out, arrives in time.
const (
	RequestTimeout = 2 * time.Minute
	AnswerTimeout  = 10 * time.Second
)

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

// DMPrefix starts the name of every device-mapper device banger makes.
// It is dmsnap.Prefix, named here too so that a caller of the helper
// need not link dmsnap (a test of privhelperd keeps the two equal).
const DMPrefix = "banger-"

// SnapshotPrefix starts the name of every dm snapshot of uid's banger:
// device-mapper names are one namespace for the whole host, so a user
// names snapshots under their uid and nobody can take the name another
// user's VM will need. The helper refuses any other name from a user.
func SnapshotPrefix(uid uint32) string {
	return DMPrefix + strconv.FormatUint(uint64(uid), 10) + "-"
}

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
}

func (e *Error) Error() string { return fmt.Sprintf("banger helper: %s: %s", e.Code, e.Msg) }

// Denied is a refusal: the request is well formed but not the caller's
// to make.
func Denied(format string, a ...any) *Error {
	return &Error{Code: CodeDenied, Msg: fmt.Sprintf(format, a...)}
}

// Invalid is a refusal of a malformed request.
func Invalid(format string, a ...any) *Error {
	return &Error{Code: CodeInvalid, Msg: fmt.Sprintf(format, a...)}
}

// DecodeRequest parses one request strictly: unknown fields are refused,
// and so is any request but hello of another protocol version. Its errors
// are *Error with CodeInvalid.
func DecodeRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequest {
		return r, Invalid("request of %d bytes is over the %d byte limit", len(data), MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, Invalid("malformed request: %v", err)
	}
	if dec.More() {
		return r, Invalid("malformed request: more than one JSON value")
	}
	// Hello is answered whatever the caller's protocol: its answer is how
	// a bangerd or doctor of another build learns the helper's.
	if r.Version != ProtocolVersion && r.Op != OpHello {
		return r, Invalid("the caller speaks protocol version %d, the helper %d: install one build of banger for both and restart the helper (sudo systemctl restart banger-helper)", r.Version, ProtocolVersion)
	}
	return r, nil
}

// ErrorResponse is the answer that carries err: its code when err is (or
// wraps) an *Error, else CodeFailed.
func ErrorResponse(err error) Response {
	var e *Error
	if errors.As(err, &e) {
		return Response{Error: e.Msg, Code: e.Code}
	}
	return Response{Error: err.Error(), Code: CodeFailed}
}
