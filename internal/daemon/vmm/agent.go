package vmm

import (
	"context"
	"fmt"
	"net"
	"sync"

	"banger/internal/guest/client"
)

// AgentLink reaches one VM's guest agent.
type AgentLink interface {
	// Open opens one stream to the agent.
	Open(ctx context.Context) (net.Conn, error)
	// Close drops what the link holds open.
	Close()
}

// Client is a guest-agent client over l.
func Client(l AgentLink) *client.Client { return client.New(l.Open, client.Config{}) }

// PerStream is a link that dials a new connection for every stream
// (Firecracker's hybrid vsock).
type PerStream func(ctx context.Context) (net.Conn, error)

// Open dials.
func (p PerStream) Open(ctx context.Context) (net.Conn, error) { return p(ctx) }

// Close holds nothing.
func (PerStream) Close() {}

// Mux is a link over one multiplexed connection to a Unix socket (QEMU's
// virtio-serial chardev), redialled when it breaks.
type Mux struct {
	socket string

	mu  sync.Mutex
	mux *client.Mux
}

// NewMux is a link to the agent behind socket.
func NewMux(socket string) *Mux { return &Mux{socket: socket} }

// Open opens a stream, dialling the socket when no session is up.
func (l *Mux) Open(ctx context.Context) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mux != nil {
		select {
		case <-l.mux.Done():
			l.mux.Close()
			l.mux = nil
		default:
		}
	}
	if l.mux == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", l.socket)
		if err != nil {
			return nil, fmt.Errorf("reach the guest agent on %s: %w", l.socket, err)
		}
		m, err := client.NewMux(c)
		if err != nil {
			c.Close()
			return nil, err
		}
		l.mux = m
	}
	conn, err := l.mux.Open(ctx)
	if err != nil {
		l.mux.Close()
		l.mux = nil
	}
	return conn, err
}

// Close ends the session.
func (l *Mux) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mux != nil {
		l.mux.Close()
		l.mux = nil
	}
}
