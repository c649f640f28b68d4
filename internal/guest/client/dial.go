package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"banger/internal/guest/proto"

	"github.com/hashicorp/yamux"
)

// OpenFunc opens a new stream to the agent. Each request uses its own
// stream, so the Client never knows which transport carries it.
type OpenFunc func(ctx context.Context) (net.Conn, error)

// HandshakeTimeout bounds the Firecracker CONNECT handshake; the context
// passed to DialFirecracker may end it sooner.
const HandshakeTimeout = 5 * time.Second

// DialFirecracker opens a stream to guest vsock port through Firecracker's
// hybrid vsock: it connects to the Unix socket udsPath (the vsock device's
// uds_path), sends "CONNECT <port>\n" and expects "OK <hostport>\n".
func DialFirecracker(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("connect to the VM's vsock socket %s (is the VM running?): %w", udsPath, err)
	}
	// The handshake is bounded by HandshakeTimeout and, through the
	// AfterFunc, by ctx.
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	line, err := handshake(c, port)
	if !stop() || ctx.Err() != nil {
		c.Close()
		return nil, fmt.Errorf("vsock handshake on %s: %w", udsPath, context.Cause(ctx))
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock handshake on %s for guest port %d: %w", udsPath, port, err)
	}
	if !strings.HasPrefix(line, "OK ") {
		c.Close()
		return nil, fmt.Errorf("vsock handshake on %s: Firecracker answered %q to CONNECT %d instead of OK; is the guest agent listening on that port?", udsPath, line, port)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func handshake(c net.Conn, port uint32) (string, error) {
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return "", err
	}
	// Read byte by byte: whatever follows the newline belongs to the agent.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 128 {
		if _, err := c.Read(b); err != nil {
			if errors.Is(err, io.EOF) {
				return "", errors.New("connection closed by Firecracker without an answer; the guest agent is probably not listening yet")
			}
			return "", fmt.Errorf("no answer to CONNECT: %w", err)
		}
		if b[0] == '\n' {
			return strings.TrimSuffix(string(line), "\r"), nil
		}
		line = append(line, b[0])
	}
	return "", fmt.Errorf("answer to CONNECT is longer than 128 bytes: %q", line)
}

// FirecrackerOpener returns an OpenFunc that dials guest port through the
// hybrid vsock socket at udsPath.
func FirecrackerOpener(udsPath string, port uint32) OpenFunc {
	return func(ctx context.Context) (net.Conn, error) { return DialFirecracker(ctx, udsPath, port) }
}

// NetOpener returns an OpenFunc that dials network/address, e.g. a Unix
// socket an agent listens on directly (tests, or a relay).
func NetOpener(network, address string) OpenFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, fmt.Errorf("connect to guest agent at %s: %w", address, err)
		}
		return c, nil
	}
}

// Mux runs the client end of a yamux session over one byte stream (the
// host end of the VM's virtio-serial port) and opens a stream per request.
type Mux struct {
	sess *yamux.Session
}

// NewMux starts a multiplexed session over conn. The Mux owns conn and
// closes it on Close.
func NewMux(conn io.ReadWriteCloser) (*Mux, error) {
	sess, err := yamux.Client(conn, proto.MuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start multiplexer on the agent's serial stream: %w", err)
	}
	return &Mux{sess: sess}, nil
}

// Open opens a new stream. It is an OpenFunc.
func (m *Mux) Open(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := m.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open a stream to the guest agent over the serial port: %w", err)
	}
	return s, nil
}

// Done is closed when the session ends, e.g. because the VM stopped.
func (m *Mux) Done() <-chan struct{} { return m.sess.CloseChan() }

// Close ends the session and every stream on it.
func (m *Mux) Close() error { return m.sess.Close() }
