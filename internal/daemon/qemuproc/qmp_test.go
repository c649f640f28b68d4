package qemuproc

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeMonitor serves the fake QMP (fake_test.go) on a real Unix socket in
// this process and returns its path.
func fakeMonitor(t *testing.T, obeyQuit bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serveFakeQMP(c, obeyQuit, quit)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return path
}

func TestQMPClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := DialQMP(ctx, fakeMonitor(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "7.2.22" {
		t.Errorf("version %q", q.Version)
	}
	// The fake sends an event before this reply; it must be skipped.
	st, err := q.QueryStatus(ctx)
	if err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	if err := q.SystemPowerdown(ctx); err != nil {
		t.Fatalf("SystemPowerdown: %v", err)
	}
	_, err = q.Execute(ctx, "no-such-command", map[string]int{"x": 1})
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("unknown command gave %v", err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Fatalf("Quit: %v", err)
	}
}

func TestQMPNotAMonitor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := DialQMP(ctx, path); err == nil || !strings.Contains(err.Error(), "did not greet") {
		t.Fatalf("DialQMP on a non-QMP socket: %v", err)
	}
}

func TestQMPSilentMonitorHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			conns <- c // accepted, never answered
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := DialQMP(ctx, path)
		errc <- err
	}()
	c := <-conns
	defer c.Close()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("DialQMP after cancel: %v, want context.Canceled", err)
	}
}

func TestDecodeQMPMessage(t *testing.T) {
	for _, tt := range []struct {
		in   string
		kind qmpKind
	}{
		{`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`, qmpGreeting},
		{`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}` + "\r\n", qmpEvent},
		{`{"return": {}, "id": "banger-1"}`, qmpReturn},
		{`{"error": {"class": "GenericError", "desc": "x"}, "id": 3}`, qmpErrorReply},
	} {
		_, kind, err := decodeQMPMessage([]byte(tt.in))
		if err != nil || kind != tt.kind {
			t.Errorf("decode %s: kind %d, %v; want %d", tt.in, kind, err, tt.kind)
		}
	}
	for _, bad := range []string{"", "[]", "{", `{"id": 1}`, "null", `{"event": ""}`} {
		if _, _, err := decodeQMPMessage([]byte(bad)); err == nil {
			t.Errorf("decode %q accepted", bad)
		}
	}
}

func FuzzDecodeQMPMessage(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false}}`,
		`{"return": {"status": "running", "running": true}, "id": "banger-2"}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": "banger-3"}`,
		`{"QMP": 1}`, `{"error": null, "return": 5}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, kind, err := decodeQMPMessage(data)
		if err != nil {
			if kind != 0 {
				t.Fatalf("error %v with kind %d", err, kind)
			}
			return
		}
		switch kind {
		case qmpGreeting:
			if m.Greeting == nil {
				t.Fatal("greeting without QMP member")
			}
		case qmpEvent:
			if m.Event == "" {
				t.Fatal("event without name")
			}
		case qmpErrorReply:
			if m.Error == nil || m.Error.Error() == "" {
				t.Fatal("error reply without error")
			}
		case qmpReturn:
			if m.Return == nil {
				t.Fatal("return without value")
			}
		default:
			t.Fatalf("kind %d without error", kind)
		}
	})
}
