package daemon

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/guest/agent"
)

// TestWaitReadyRedialsASessionNobodyAnswers: the first connection to the
// agent's socket is read and never answered (a guest resumed from a
// snapshot that dropped what the host sent before it reopened its port);
// waitReady must give up on that session and reach the agent on a new one.
func TestWaitReadyRedialsASessionNobodyAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		first, err := ln.Accept()
		if err != nil {
			return
		}
		defer first.Close()
		go func() { _, _ = io.Copy(io.Discard, first) }()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = agent.ServeMux(ctx, c, agent.Options{Uptime: func() (time.Duration, error) { return time.Second, nil }})
	}()
	vm, _, _ := fakeVM(t)
	link := vmm.NewMux(sock)
	defer link.Close()
	start := time.Now()
	if err := vm.waitReady(ctx, link, &fakeMachine{ch: make(chan struct{})}, 3*readyAsk); err != nil {
		t.Fatalf("waitReady with a first session nobody answers: %v", err)
	}
	if took := time.Since(start); took < readyAsk {
		t.Fatalf("ready after %s, before the first asking could time out: the test proves nothing", took)
	}
}
