package cli

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/rpc"
)

// chanListener hands the agent the connections the fake daemon upgraded.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}
func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake", Net: "unix"} }

// TestAgentClientReusesItsProbeStream: the stream agentClient opens to check
// that the agent answers serves the first request, so a command costs one
// upgrade through bangerd, not two; later requests dial anew.
func TestAgentClientReusesItsProbeStream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	al := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- agent.Serve(ctx, al, agent.Options{}) }()
	defer func() { cancel(); <-served }()

	var upgrades atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil || req.Header.Get("Upgrade") != rpc.UpgradeAgent {
				c.Close()
				continue
			}
			upgrades.Add(1)
			if _, err := c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + rpc.UpgradeAgent + "\r\n\r\n")); err != nil {
				c.Close()
				continue
			}
			select {
			case al.conns <- c:
			case <-al.done:
				c.Close()
				return
			}
		}
	}()

	a := &app{socket: sock, client: &rpc.Client{}}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()

	// The stream handed to the client is the socket itself, which file
	// copies can sendfile to and splice from.
	conn, err := dialAgent(rctx, sock, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Errorf("dialAgent returned a %T, not the *net.UnixConn", conn)
	}
	conn.Close()
	upgrades.Store(0)

	c, err := a.agentClient(rctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(rctx); err != nil {
		t.Fatal(err)
	}
	if n := upgrades.Load(); n != 1 {
		t.Fatalf("%d upgrades for the probe and one request, want 1", n)
	}
	if _, err := c.Health(rctx); err != nil {
		t.Fatal(err)
	}
	if n := upgrades.Load(); n != 2 {
		t.Fatalf("%d upgrades after a second request, want 2", n)
	}

	// Unused within firstStreamReuse, the early stream is dropped and the
	// first request dials anew.
	old := firstStreamReuse
	firstStreamReuse = 20 * time.Millisecond
	defer func() { firstStreamReuse = old }()
	upgrades.Store(0)
	c, err = a.agentClient(rctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Health(rctx); err != nil {
		t.Fatal(err)
	}
	if n := upgrades.Load(); n != 2 {
		t.Fatalf("%d upgrades for an expired probe and one request, want 2", n)
	}
}
