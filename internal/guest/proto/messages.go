package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/yamux"
)

// Version is the protocol version this build speaks. Host and agent must
// speak the same version; a change that an older peer cannot understand
// bumps it (and the banger release that ships it is a minor release).
const Version = 1

// DefaultPort is the vsock port the agent listens on in the guest.
const DefaultPort uint32 = 1024

// SerialPortName is the name of the virtio-serial port that carries the
// multiplexed protocol when the VMM has no vsock (QEMU without vhost-vsock).
const SerialPortName = "banger.agent"

// Capabilities an agent may announce in its hello.
const (
	CapExec     = "exec"
	CapPTY      = "pty"
	CapCopyIn   = "copy-in"
	CapCopyOut  = "copy-out"
	CapForward  = "forward"
	CapShutdown = "shutdown"
	CapReboot   = "reboot"
	CapSyncTime = "sync-time"
	CapHealth   = "health"
)

// Limits on a hello, so that decoding it costs a bounded amount of memory
// and its fields are safe to print.
const (
	maxVersionLen    = 64
	maxCapabilities  = 32
	maxCapabilityLen = 32
)

// Hello opens every stream, in both directions: the host sends its hello
// first, the agent answers with its own.
type Hello struct {
	// Protocol is the wire protocol version of the sender.
	Protocol int `json:"protocol"`
	// Version is the sender's software version, e.g. "v0.3.1" or "dev".
	Version string `json:"version"`
	// Capabilities lists the requests the sender serves (agent) or may use
	// (host). Unknown capabilities are ignored.
	Capabilities []string `json:"capabilities,omitempty"`
}

// Validate checks that the hello's fields are within their limits.
func (h Hello) Validate() error {
	if h.Protocol < 1 {
		return fmt.Errorf("hello: protocol version %d is not a positive integer", h.Protocol)
	}
	if h.Version == "" || len(h.Version) > maxVersionLen {
		return fmt.Errorf("hello: version string must be 1 to %d bytes, got %d", maxVersionLen, len(h.Version))
	}
	for _, c := range h.Version {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("hello: version string %q has a character outside printable ASCII", h.Version)
		}
	}
	if len(h.Capabilities) > maxCapabilities {
		return fmt.Errorf("hello: %d capabilities, at most %d allowed", len(h.Capabilities), maxCapabilities)
	}
	for _, c := range h.Capabilities {
		if c == "" || len(c) > maxCapabilityLen {
			return fmt.Errorf("hello: capability name must be 1 to %d bytes, got %d", maxCapabilityLen, len(c))
		}
		for _, r := range c {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("hello: capability %q may only hold a-z, 0-9 and '-'", c)
			}
		}
	}
	return nil
}

// Has reports whether the hello lists capability c.
func (h Hello) Has(c string) bool { return slices.Contains(h.Capabilities, c) }

// DecodeHello parses and validates a hello payload. Unknown JSON fields are
// ignored so that optional fields can be added without a version bump.
func DecodeHello(p []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(p, &h); err != nil {
		return Hello{}, malformed("hello payload is not valid JSON: %v", err)
	}
	if err := h.Validate(); err != nil {
		return Hello{}, &MalformedFrameError{Reason: err.Error()}
	}
	return h, nil
}

// VersionError says that host and agent speak different protocol versions.
type VersionError struct {
	Host  int
	Agent int
}

func (e *VersionError) Error() string {
	what := "update banger-vsock-agent inside the image"
	if e.Agent > e.Host {
		what = "update banger on the host"
	}
	return fmt.Sprintf("guest agent speaks protocol version %d but the host speaks version %d; %s so both match",
		e.Agent, e.Host, what)
}

// CheckCompatible returns a *VersionError unless host and agent versions match.
func CheckCompatible(host, agent int) error {
	if host != agent {
		return &VersionError{Host: host, Agent: agent}
	}
	return nil
}

// Error codes carried by RemoteError.
const (
	CodeFrameTooLarge  = "frame-too-large" // a header announced more than MaxPayload
	CodeMalformedFrame = "malformed-frame" // bytes that are not a valid frame
	CodeVersion        = "version"         // incompatible protocol versions
	CodeBadRequest     = "bad-request"     // a well-formed frame that makes no sense here
	CodeNotSupported   = "not-supported"   // the agent does not serve this request
	CodeFailed         = "failed"          // the request was valid but failed
)

// RemoteError is the payload of an error frame: the peer's account of why it
// ended the stream.
type RemoteError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *RemoteError) Error() string {
	return "guest agent: " + e.Message
}

// DecodeError turns an error frame into a *RemoteError. A payload that does
// not parse still yields an error, carrying the raw text.
func DecodeError(f Frame) error {
	var e RemoteError
	if err := json.Unmarshal(f.Payload, &e); err != nil || e.Message == "" {
		const max = 200
		s := string(f.Payload)
		if len(s) > max {
			s = s[:max]
		}
		return &RemoteError{Code: CodeMalformedFrame, Message: fmt.Sprintf("unreadable error frame %q", s)}
	}
	// The peer's words end up on a terminal and in logs as part of an
	// error: they get no escape sequences, no line breaks that could pass
	// for lines of banger's own, and a bound.
	e.Code = printable(e.Code, 64)
	e.Message = printable(e.Message, maxErrorMessage)
	return &e
}

// maxErrorMessage bounds the message of a decoded error frame.
const maxErrorMessage = 2048

// printable returns s with every rune that is not printable (control
// characters, escape sequences' introducers, bidirectional and other
// format characters; JSON has made it UTF-8) written as a Go escape,
// cut to at most max bytes.
func printable(s string, max int) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= max {
			b.WriteString(fmt.Sprintf("... (%d more bytes)", len(s)-i))
			break
		}
		switch {
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// ErrorFor converts a local error into the error frame that reports it.
func ErrorFor(err error) *RemoteError {
	var re *RemoteError
	var tl *FrameTooLargeError
	var mf *MalformedFrameError
	var ve *VersionError
	switch {
	case errors.As(err, &re):
		return re
	case errors.As(err, &tl):
		return &RemoteError{Code: CodeFrameTooLarge, Message: err.Error()}
	case errors.As(err, &mf):
		return &RemoteError{Code: CodeMalformedFrame, Message: err.Error()}
	case errors.As(err, &ve):
		return &RemoteError{Code: CodeVersion, Message: err.Error()}
	default:
		return &RemoteError{Code: CodeFailed, Message: err.Error()}
	}
}

// Errorf builds a *RemoteError with the given code.
func Errorf(code, format string, args ...any) *RemoteError {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ExecRequest starts a command in the guest.
type ExecRequest struct {
	// Argv is the command and its arguments; Argv[0] is looked up in PATH.
	Argv []string `json:"argv"`
	// Env holds KEY=VALUE pairs laid over the agent's base environment.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means the user's home.
	Dir string `json:"dir,omitempty"`
	// User is a user name or numeric uid; empty means the agent's own user.
	User string `json:"user,omitempty"`
	// PTY runs the command on a new pseudo-terminal of Rows x Cols; its
	// stdout and stderr then arrive together as stdout frames.
	PTY  bool   `json:"pty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// Validate checks the request for values the agent cannot act on.
func (r ExecRequest) Validate() error {
	if len(r.Argv) == 0 || r.Argv[0] == "" {
		return errors.New("exec: argv is empty; name a command to run")
	}
	for _, a := range r.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return errors.New("exec: an argument contains a NUL byte")
		}
	}
	for _, e := range r.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("exec: environment entry %q is not KEY=VALUE", e)
		}
	}
	if r.Dir != "" && !path.IsAbs(r.Dir) {
		return fmt.Errorf("exec: working directory %q is not an absolute path", r.Dir)
	}
	return nil
}

// Resize changes the window size of an exec's pseudo-terminal.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal asks the agent to send a signal to a running exec's process group.
// Name is a signal name with or without the SIG prefix, e.g. "TERM".
type Signal struct {
	Name string `json:"name"`
}

// Exit is how a command ended. When Signal is set the command was killed by
// that signal (e.g. "SIGKILL") and Code is 128 plus the signal number, as a
// shell would report it.
type Exit struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

func (e Exit) String() string {
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// CopyInRequest unpacks the tar stream that follows it into Dir, which must
// be absolute and is created when missing.
type CopyInRequest struct {
	Dir string `json:"dir"`
}

// CopyOutRequest asks for a tar stream of Path (a file, symlink or
// directory tree), whose single top-level entry is Path's base name.
type CopyOutRequest struct {
	Path string `json:"path"`
}

// ForwardRequest connects to 127.0.0.1:Port inside the guest.
type ForwardRequest struct {
	Port uint16 `json:"port"`
}

// SyncTimeRequest sets the guest's clock.
type SyncTimeRequest struct {
	UnixNano int64 `json:"unix_nano"`
}

// Time returns the requested time.
func (r SyncTimeRequest) Time() time.Time { return time.Unix(0, r.UnixNano) }

// HealthResult is the answer to a health request.
type HealthResult struct {
	// UptimeMillis is how long the guest kernel has been running.
	UptimeMillis int64 `json:"uptime_ms"`
	// AgentVersion is the agent's software version.
	AgentVersion string `json:"agent_version"`
	// Ready reports whether the agent finished its boot duties.
	Ready bool `json:"ready"`
}

// Uptime returns UptimeMillis as a duration.
func (h HealthResult) Uptime() time.Duration { return time.Duration(h.UptimeMillis) * time.Millisecond }

// MuxConfig is the yamux configuration both ends use when the protocol runs
// over a single byte stream (a virtio-serial port).
func MuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.AcceptBacklog = 256
	c.MaxStreamWindowSize = 1 << 20
	return c
}
