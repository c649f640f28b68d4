package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/guest/proto"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"TERM": syscall.SIGTERM, "sigint": syscall.SIGINT, "SIGKILL": syscall.SIGKILL, "9": syscall.SIGKILL, "winch": syscall.SIGWINCH} {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("%q: got %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "NOPE", "0", "99", "-1"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestFindSerialPort(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for port, name := range map[string]string{"vport0p0": "org.qemu.guest_agent.0\n", "vport0p1": proto.SerialPortName + "\n"} {
		dir := filepath.Join(sys, "class", "virtio-ports", port)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	_, err := FindSerialPort(sys, dev, proto.SerialPortName)
	if err == nil || !strings.Contains(err.Error(), "device node is missing") {
		t.Fatalf("missing node: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dev, "vport0p1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := FindSerialPort(sys, dev, proto.SerialPortName)
	if err != nil || got != filepath.Join(dev, "vport0p1") {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := FindSerialPort(sys, dev, "other"); !errors.Is(err, ErrNoSerialPort) {
		t.Fatalf("unknown name: %v", err)
	}
}

func TestBuildEnvOverridesBase(t *testing.T) {
	env := buildEnv(identity{name: "u", home: "/home/u", shell: "/bin/bash"}, proto.ExecRequest{PTY: true, Env: []string{"PATH=/x", "A=1", "A=2"}})
	want := map[string]string{"PATH": "/x", "HOME": "/home/u", "USER": "u", "SHELL": "/bin/bash", "TERM": "xterm-256color", "A": "2"}
	if len(env) != len(want)+1 { // + LOGNAME
		t.Errorf("env has duplicates: %q", env)
	}
	for k, v := range want {
		if got := envValue(env, k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	if p, err := lookPath("sh", "/nonexistent:"+defaultPath); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("lookPath sh: %q %v", p, err)
	}
	if _, err := lookPath("sh", "/nonexistent"); err == nil {
		t.Error("lookPath found sh on an empty PATH")
	}
}

// Serve returns once ctx ends, closing streams that are still open.
func TestServeStopsAndClosesStreams(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Options{}) }()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := proto.NewConn(c)
	_ = pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "t"})
	_ = pc.WriteJSON(proto.TypeExec, proto.ExecRequest{Argv: []string{"sleep", "1000"}})
	for _, want := range []proto.Type{proto.TypeHello, proto.TypeOK} {
		if f, err := pc.Next(); err != nil || f.Type != want {
			t.Fatalf("want %s, got %s %v", want, f.Type, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The stream was closed; the command was killed on the way out.
	for {
		_, err := pc.Next()
		if err != nil {
			break
		}
	}
}

// ServeMux reports the end of its session when the host end goes away.
func TestServeMuxEndsWithSession(t *testing.T) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeMux(context.Background(), a, Options{}) }()
	b.Close()
	if err := <-done; err == nil {
		t.Fatal("ServeMux returned nil after its byte stream ended")
	}
	_, _ = io.Copy(io.Discard, a)
}
