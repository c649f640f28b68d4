package vmm_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/daemon/vmm/vmmtest"
	"banger/internal/guest/agent"
	"banger/internal/guest/client"
)

func TestRegistry(t *testing.T) {
	r := vmm.NewRegistry(&vmmtest.Driver{})
	if d, err := r.Get(vmmtest.Name); err != nil || d.Name() != vmmtest.Name || !r.Has(vmmtest.Name) {
		t.Errorf("Get(fake) = %v, %v", d, err)
	}
	_, err := r.Get("bochs")
	if !errors.Is(err, vmm.ErrUnknown) || !strings.Contains(err.Error(), `unknown vmm "bochs": use auto, fake`) || r.Has("bochs") {
		t.Errorf("Get(bochs) = %v", err)
	}
}

func TestBootTimeout(t *testing.T) {
	if (vmm.Launch{}).BootTimeout() != vmm.BootTimeoutKVM || (vmm.Launch{Emulated: true}).BootTimeout() != vmm.BootTimeoutTCG {
		t.Error("boot timeouts do not follow Emulated")
	}
}

// The multiplexed link redials a session that broke: a stream after the
// agent restarted works.
func TestMuxRedials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	serve := func() (stop func()) {
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			ln.Close()
			if err != nil {
				return
			}
			_ = agent.ServeMux(ctx, c, agent.Options{Uptime: func() (time.Duration, error) { return time.Second, nil }})
		}()
		return func() { cancel(); ln.Close(); <-done }
	}
	l := vmm.NewMux(sock)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := serve()
	if h, err := vmm.Client(l).Health(ctx); err != nil || !h.Ready {
		t.Fatalf("health: %+v, %v", h, err)
	}
	stop()
	stop = serve()
	defer stop()
	var err error
	for range 50 {
		var h agentHealth
		h, err = vmm.Client(l).Health(ctx)
		if err == nil && h.Ready {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no health after the agent came back: %v", err)
}

type agentHealth = client.HealthResult
