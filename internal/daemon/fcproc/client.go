package fcproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultCallTimeout bounds one API call when the caller's context has no
// earlier deadline.
const DefaultCallTimeout = 5 * time.Second

// Client talks to one Firecracker API server over its Unix socket.
type Client struct {
	socket  string
	timeout time.Duration
	http    *http.Client
}

// NewClient returns a client for the API socket at socketPath. Every call is
// bounded by callTimeout (DefaultCallTimeout when zero or negative).
func NewClient(socketPath string, callTimeout time.Duration) *Client {
	if callTimeout <= 0 {
		callTimeout = DefaultCallTimeout
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		// Firecracker serves one connection at a time; a kept-alive
		// connection saves a dial per call during configuration.
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socketPath, timeout: callTimeout, http: &http.Client{Transport: tr}}
}

// SocketPath is the API socket this client talks to.
func (c *Client) SocketPath() string { return c.socket }

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// APIError is a non-2xx answer from Firecracker.
type APIError struct {
	Method       string
	Path         string
	Status       int
	FaultMessage string // Firecracker's fault_message, cleaned of line breaks
}

func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = "no fault message"
	}
	return fmt.Sprintf("firecracker API %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), msg)
}

// Request bodies. Field names and optionality follow Firecracker v1.14.2's
// swagger definitions of the same name; spec_test.go checks them against it.

// Logger is the body of PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     *bool  `json:"show_level,omitempty"`
	ShowLogOrigin *bool  `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Metrics is the body of PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MachineConfig is the body of PUT /machine-config (MachineConfiguration).
type MachineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMiB      int    `json:"mem_size_mib"`
	SMT             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	CPUTemplate     string `json:"cpu_template,omitempty"` // deprecated upstream
	HugePages       string `json:"huge_pages,omitempty"`   // None or 2M
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// TokenBucket is one bucket of a RateLimiter.
type TokenBucket struct {
	Size         int64  `json:"size"`
	RefillTime   int64  `json:"refill_time"` // milliseconds
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
}

// RateLimiter limits bytes and operations per second.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id} for a virtio-block drive.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	PathOnHost   string       `json:"path_on_host"`
	IsRootDevice bool         `json:"is_root_device"`
	IsReadOnly   bool         `json:"is_read_only"`
	PartUUID     string       `json:"partuuid,omitempty"`
	CacheType    string       `json:"cache_type,omitempty"` // Unsafe or Writeback
	IOEngine     string       `json:"io_engine,omitempty"`  // Sync or Async
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is the body of PUT /vsock.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// InstanceInfo is the answer of GET /.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running", "Paused"
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
}

// FirecrackerVersion is the answer of GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// faultBody is Firecracker's error body (definition Error).
type faultBody struct {
	FaultMessage string `json:"fault_message"`
}

// PutLogger configures Firecracker's own log.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics configures the metrics sink. Firecracker refuses a second call.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// PutMachineConfig sets vCPUs and memory.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PutBootSource sets kernel, initrd and command line.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive adds or replaces the drive d.DriveID.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface adds the network interface n.IfaceID.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutVsock configures the vsock device; Firecracker binds v.UDSPath.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// InstanceStart boots the configured microVM.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: ActionInstanceStart}, nil)
}

// SendCtrlAltDel asks the guest to reboot, which makes Firecracker exit.
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: ActionSendCtrlAltDel}, nil)
}

// InstanceInfo asks GET / for the instance's id, state and version.
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// Version asks GET /version for Firecracker's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v FirecrackerVersion
	err := c.do(ctx, http.MethodGet, "/version", nil, &v)
	return v.FirecrackerVersion, err
}

// maxBody bounds how much of an answer is read.
const maxBody = 1 << 20

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("firecracker API %s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("firecracker API %s %s on %s: no answer within %s: %w", method, path, c.socket, c.timeout, err)
		}
		return fmt.Errorf("firecracker API %s %s on %s: %w", method, path, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, FaultMessage: parseFault(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker API %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// parseFault extracts fault_message from an error body, falling back to the
// raw text, and folds Firecracker's backslash-newline continuations and other
// line breaks into single spaces so the message fits on one line.
func parseFault(data []byte) string {
	var f faultBody
	msg := strings.TrimSpace(string(data))
	if err := json.Unmarshal(data, &f); err == nil && f.FaultMessage != "" {
		msg = f.FaultMessage
	}
	msg = strings.ReplaceAll(msg, "\\\n", " ")
	msg = strings.Join(strings.Fields(msg), " ")
	const maxLen = 2000
	if len(msg) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
