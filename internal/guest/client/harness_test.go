package client_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/testutil"
	"banger/internal/testutil/agenttest"
	"banger/internal/testutil/ptypair"
)

// fakeFirecracker stands in for Firecracker's hybrid vsock: it accepts
// connections on a Unix socket, expects "CONNECT <port>\n", answers
// "OK 1234\n" and splices the connection to the agent's socket. A CONNECT
// to any other port is closed without an answer, as Firecracker does when
// nothing listens in the guest.
func fakeFirecracker(t testing.TB, agentSock string, port string) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t, "bgt"), "fc.vsock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn) {
		mu.Lock()
		conns[c] = true
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				line, err := bufio.NewReaderSize(c, 16).ReadString('\n')
				if err != nil || strings.TrimSpace(line) != "CONNECT "+port {
					return
				}
				g, err := net.Dial("unix", agentSock)
				if err != nil {
					return
				}
				track(g)
				defer g.Close()
				if _, err := io.WriteString(c, "OK 1234\n"); err != nil {
					return
				}
				// Splice both ways, passing each end-of-stream on as a
				// half-close so that nothing in flight is lost.
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(g, c); _ = g.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, g); _ = c.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return path
}

// pipeConn is one end of a byte stream made of two os.Pipes, standing in
// for a virtio-serial port.
type pipeConn struct{ r, w *os.File }

func (p pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeConn) Close() error {
	p.w.Close()
	return p.r.Close()
}

func pipePair(t testing.TB) (guest, host pipeConn) {
	t.Helper()
	r1, w1, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	return pipeConn{r: r1, w: w2}, pipeConn{r: r2, w: w1}
}

// serveMux runs an agent's mux server over a pipe pair and returns the
// host's Mux.
func serveMux(t testing.TB, opts agent.Options) *client.Mux {
	t.Helper()
	guest, host := pipePair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.ServeMux(ctx, guest, opts) }()
	m, err := client.NewMux(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		m.Close()
	})
	return m
}

type transport struct {
	name string
	// open returns the stream opener of a fresh agent started with opts.
	open func(t testing.TB, opts agent.Options) client.OpenFunc
}

var transports = []transport{
	{"unix", func(t testing.TB, opts agent.Options) client.OpenFunc {
		return client.NetOpener("unix", agenttest.Serve(t, opts))
	}},
	{"firecracker", func(t testing.TB, opts agent.Options) client.OpenFunc {
		return client.FirecrackerOpener(fakeFirecracker(t, agenttest.Serve(t, opts), "1024"), 1024)
	}},
	{"mux", func(t testing.TB, opts agent.Options) client.OpenFunc {
		return serveMux(t, opts).Open
	}},
	// A raw pty pair stands in for QEMU's virtio-serial port: the guest
	// side is a character device, the host side a byte stream.
	{"pty", func(t testing.TB, opts agent.Options) client.OpenFunc {
		return servePTYMux(t, opts).Open
	}},
}

// servePTYMux runs an agent's mux server on the slave of a raw pty pair and
// returns the host's Mux on the master.
func servePTYMux(t testing.TB, opts agent.Options) *client.Mux {
	t.Helper()
	master, slave, err := ptypair.OpenRaw()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.ServeMux(ctx, slave, opts) }()
	m, err := client.NewMux(master)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		m.Close()
		master.Close()
		<-done
		slave.Close()
	})
	return m
}

// eachTransport runs fn against a fresh agent on every transport.
func eachTransport(t *testing.T, opts agent.Options, fn func(t *testing.T, c *client.Client)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			fn(t, client.New(tr.open(t, opts), client.Config{Version: "test"}))
		})
	}
}

// notifyWriter collects output and closes seen once it contains want.
type notifyWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func newNotifyWriter(want string) *notifyWriter {
	return &notifyWriter{want: want, seen: make(chan struct{})}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *notifyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
