package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil/ptypair"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// listenVsockOrSkip opens a vsock listener on a port the kernel picks; it
// skips only when this host has no AF_VSOCK at all.
func listenVsockOrSkip(t *testing.T) (*vsock.Listener, uint32) {
	t.Helper()
	ln, err := ListenVsock(unix.VMADDR_PORT_ANY)
	switch {
	case errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, os.ErrNotExist):
		t.Skipf("this host has no AF_VSOCK (no vsock module or no /dev/vsock): %v", err)
	case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL):
		t.Skipf("this host has AF_VSOCK but no vsock transport to bind on: %v", err)
	}
	if err != nil {
		t.Fatalf("ListenVsock: %v", err)
	}
	addr, ok := ln.Addr().(*vsock.Addr)
	if !ok {
		ln.Close()
		t.Fatalf("ListenVsock gave a listener on %T %v, not a vsock address", ln.Addr(), ln.Addr())
	}
	if addr.Port == unix.VMADDR_PORT_ANY || addr.Port == 0 {
		ln.Close()
		t.Fatalf("listener bound to no real port: %v", addr)
	}
	return ln.(*vsock.Listener), addr.Port
}

// ListenVsock binds the port it is given: a second listener on it is
// refused with an error that names the port, and the port is free again
// once the first is closed.
func TestListenVsock(t *testing.T) {
	ln, port := listenVsockOrSkip(t)
	_, err := ListenVsock(port)
	if err == nil {
		ln.Close()
		t.Fatalf("a second listener on vsock port %d was accepted", port)
	}
	if !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprintf("vsock port %d", port)) {
		t.Errorf("second listener's error = %v; want EADDRINUSE naming port %d", err, port)
	}
	ln.Close()
	again, err := ListenVsock(port)
	if err != nil {
		t.Fatalf("vsock port %d not free after Close: %v", port, err)
	}
	again.Close()
}

// logLines collects Options.Logf lines and lets a test wait for one.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *logLines) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.count(sub) == 0 {
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no log line with %q in 10s; got %q", sub, l.lines)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runServe runs a serve loop in the background; the cleanup cancels it and
// checks that it returned nil.
func runServe(t *testing.T, serve func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve loop ended with %v, want nil once its context ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve loop did not return within 10s of its context ending")
		}
	})
}

// A port that is taken is retried, reported once, and served once free.
func TestServeVsockRetriesUntilPortIsFree(t *testing.T) {
	holder, port := listenVsockOrSkip(t)
	var log logLines
	runServe(t, func(ctx context.Context) error { return ServeVsock(ctx, port, Options{Logf: log.logf}) })
	log.waitFor(t, "retrying")
	time.Sleep(500 * time.Millisecond) // several retries
	if n := log.count("retrying"); n != 1 {
		t.Errorf("the same failure was logged %d times, want once", n)
	}
	holder.Close()
	log.waitFor(t, fmt.Sprintf("serving on vsock port %d", port))
	if _, err := ListenVsock(port); err == nil {
		t.Errorf("vsock port %d is free while ServeVsock says it serves there", port)
	}
}

// ServeUnix serves the protocol on its socket and removes it at the end.
func TestServeUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUnix(ctx, sock, Options{Version: "unix-test"}) }()
	c := client.New(client.NetOpener("unix", sock), client.Config{Version: "test"})
	hello := waitHello(t, c)
	if hello.Version != "unix-test" {
		t.Errorf("hello version %q, want unix-test", hello.Version)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeUnix: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind: %v", sock, err)
	}
}

func waitHello(t *testing.T, c *client.Client) client.Hello {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		h, err := c.Hello(ctx)
		if err == nil {
			return h
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never answered: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServeSerial finds the port by name in a sysfs tree, opens its device node
// (here the slave of a raw pty) and serves the multiplexed protocol on it.
func TestServeSerialFindsPortAndServes(t *testing.T) {
	master, slave, err := ptypair.OpenRaw()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer slave.Close()
	sys, dev := t.TempDir(), t.TempDir()
	port := filepath.Join(sys, "class", "virtio-ports", "vport0p1")
	if err := os.MkdirAll(port, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(port, "name"), []byte(proto.SerialPortName+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(slave.Name(), filepath.Join(dev, "vport0p1")); err != nil {
		t.Fatal(err)
	}
	var log logLines
	runServe(t, func(ctx context.Context) error {
		return ServeSerial(ctx, sys, dev, proto.SerialPortName, Options{Version: "serial-test", Logf: log.logf})
	})
	m, err := client.NewMux(master)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if h := waitHello(t, client.New(m.Open, client.Config{Version: "test"})); h.Version != "serial-test" {
		t.Errorf("hello version %q, want serial-test", h.Version)
	}
	log.waitFor(t, "serving on "+filepath.Join(dev, "vport0p1"))
}

// A port with no device node gets one made from its major:minor.
func TestEnsureSerialPortNode(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	port := filepath.Join(sys, "class", "virtio-ports", "vport2p1")
	if err := os.MkdirAll(port, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(port, "name"), []byte(proto.SerialPortName+"\n"), 0o444)
	if err := EnsureSerialPortNode(sys, dev, "other"); err != nil {
		t.Errorf("a name no port has: %v", err)
	}
	err := EnsureSerialPortNode(sys, dev, proto.SerialPortName)
	if err == nil || !strings.Contains(err.Error(), "number cannot be read") {
		t.Errorf("port without a dev file: %v", err)
	}
	os.WriteFile(filepath.Join(port, "dev"), []byte("junk\n"), 0o444)
	if err := EnsureSerialPortNode(sys, dev, proto.SerialPortName); err == nil || !strings.Contains(err.Error(), "not major:minor") {
		t.Errorf("junk dev file: %v", err)
	}
	os.WriteFile(filepath.Join(port, "dev"), []byte("1:3\n"), 0o444) // the major:minor of /dev/null
	err = EnsureSerialPortNode(sys, dev, proto.SerialPortName)
	if errors.Is(err, unix.EPERM) {
		t.Skipf("cannot make device nodes here (needs CAP_MKNOD): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dev, "vport2p1"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("node mode %o rdev %d:%d, want a character device 1:3", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := EnsureSerialPortNode(sys, dev, proto.SerialPortName); err != nil {
		t.Errorf("second call with the node there: %v", err)
	}
}
