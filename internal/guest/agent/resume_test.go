package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"banger/internal/guest/proto"
)

// resumeExchange sends a hello and a resumed frame with payload over a
// pipe to an agent with opts and returns the agent's hello and answer.
func resumeExchange(t *testing.T, opts Options, payload []byte) (proto.Hello, proto.Frame) {
	t.Helper()
	host, guest := net.Pipe()
	defer host.Close()
	opts.fill()
	s := &server{opts: opts, conns: map[net.Conn]struct{}{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); s.handle(ctx, guest) }()
	defer func() { host.Close(); <-done }()
	pc := proto.NewConn(host)
	wrote := make(chan struct{})
	defer func() { host.Close(); <-wrote }()
	go func() {
		defer close(wrote)
		_ = pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "test"})
		_ = pc.WriteFrame(proto.TypeResumed, payload)
	}()
	f, err := pc.Next()
	if err != nil || f.Type != proto.TypeHello {
		t.Fatalf("hello: %v %v", f.Type, err)
	}
	h, err := proto.DecodeHello(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	f, err = pc.Next()
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	return h, proto.Frame{Type: f.Type, Payload: bytes.Clone(f.Payload)}
}

func TestResumedHandler(t *testing.T) {
	req := proto.ResumedRequest{ID: "vm-1", UnixNano: 1, Entropy: make([]byte, proto.MinResumeEntropy)}
	good, _ := json.Marshal(req)
	var got proto.ResumedRequest
	opts := Options{Resume: func(_ context.Context, r proto.ResumedRequest) proto.ResumedResult {
		got = r
		return proto.ResumedResult{Steps: []proto.ResumedStep{{Duty: "entropy", Status: proto.ResumeDone}}}
	}}
	h, f := resumeExchange(t, opts, good)
	if !h.Has(proto.CapResume) || f.Type != proto.TypeOK || got.ID != "vm-1" {
		t.Fatalf("hello %v, answer %s %s, hook got %+v", h.Capabilities, f.Type, f.Payload, got)
	}
	// A request that does not validate never reaches the hook.
	got = proto.ResumedRequest{}
	bad, _ := json.Marshal(proto.ResumedRequest{ID: "vm-1", UnixNano: 1})
	_, f = resumeExchange(t, opts, bad)
	if e, ok := proto.DecodeError(f).(*proto.RemoteError); f.Type != proto.TypeError || !ok || e.Code != proto.CodeBadRequest || got.ID != "" {
		t.Errorf("bad request answered %s %s, hook got %+v", f.Type, f.Payload, got)
	}
	// Without the hook: not announced, and refused as not supported.
	h, f = resumeExchange(t, Options{}, good)
	if h.Has(proto.CapResume) {
		t.Error("resume announced without a hook")
	}
	if e, ok := proto.DecodeError(f).(*proto.RemoteError); f.Type != proto.TypeError || !ok || e.Code != proto.CodeNotSupported {
		t.Errorf("no hook answered %s %s", f.Type, f.Payload)
	}
}
