package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/guest/client"
	"banger/internal/rpc"
)

// firstStreamReuse is how long after agentClient's check its stream may
// still serve as the client's first one (a variable for tests).
var firstStreamReuse = 2 * time.Second

// agentClient returns a guest-agent client whose every stream goes through
// the daemon: one upgraded connection per stream.
func (a *app) agentClient(ctx context.Context, vm string) (*client.Client, error) {
	if _, err := a.daemon(ctx); err != nil {
		return nil, err
	}
	sock, err := a.socketPath()
	if err != nil {
		return nil, err
	}
	// One stream up front, so an error (VM not running) shows before any
	// work starts. When the client asks for its first stream soon after, it
	// gets this one rather than a second dial (each is a round trip through
	// bangerd to the guest); a command that waits first (port-forward) gets
	// a fresh one, and the early one is closed.
	first, err := dialAgent(ctx, sock, vm)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	take := func() net.Conn {
		mu.Lock()
		defer mu.Unlock()
		c := first
		first = nil
		return c
	}
	// Unused by then, the early stream is closed, so that it holds no
	// upgrade in bangerd and no stream in the guest meanwhile.
	time.AfterFunc(firstStreamReuse, func() {
		if c := take(); c != nil {
			c.Close()
		}
	})
	open := func(ctx context.Context) (net.Conn, error) {
		if c := take(); c != nil {
			return c, nil
		}
		return dialAgent(ctx, sock, vm)
	}
	return client.New(open, client.Config{}), nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func dialAgent(ctx context.Context, sock, vm string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, &rpc.DaemonUnreachableError{Socket: sock, Err: err}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := fmt.Sprintf("GET /v1/vms/%s/agent HTTP/1.1\r\nHost: bangerd\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
		pathSegment(vm), rpc.UpgradeAgent, rpc.HeaderAPIVersion, strconv.Itoa(buildinfo.APIVersion))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reach the agent of %s through bangerd: %w", vm, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		var eb rpc.ErrorBody
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &eb) == nil && eb.Error.Message != "" {
			return nil, &rpc.Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, fmt.Errorf("reach the agent of %s: daemon answered %s", vm, resp.Status)
	}
	_ = conn.SetDeadline(timeZero)
	if br.Buffered() == 0 {
		// The usual case (the agent speaks only after the client's hello):
		// hand over the socket itself, so that file copies can use
		// sendfile and splice on it.
		return conn, nil
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

var timeZero time.Time
