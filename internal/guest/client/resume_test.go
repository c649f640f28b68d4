package client_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/guest/boot"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil"
	"banger/internal/testutil/agenttest"
)

// resumeGuest is a guest's root for the resume hook: a parent's host name
// and host key, with the machine-wide parts replaced by recorders.
type resumeGuest struct {
	mu      sync.Mutex
	entropy []byte
	clock   time.Time
	env     boot.ResumeEnv
}

func newResumeGuest(t *testing.T) *resumeGuest {
	t.Helper()
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	if err := os.MkdirAll(filepath.Join(etc, "ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "hostname"), []byte("parent\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "ssh", "ssh_host_ed25519_key.pub"), []byte("the parent's key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &resumeGuest{}
	g.env = boot.ResumeEnv{
		Env:       boot.Env{EtcDir: etc, SetHostname: func(string) error { return nil }},
		SSHDir:    filepath.Join(etc, "ssh"),
		StateFile: filepath.Join(root, "run", "resumed"),
		AddEntropy: func(b []byte) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.entropy = slices.Clone(b)
			return nil
		},
		SetClock: func(tm time.Time) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.clock = tm
			return nil
		},
		ReloadSSHD: func() (bool, error) { return false, nil },
	}
	return g
}

func TestResumedAgainstTheRealAgent(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			g := newResumeGuest(t)
			c := client.New(tr.open(t, agent.Options{Resume: boot.Resumer(g.env)}), client.Config{Version: "test"})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sent := time.Now()
			res, err := c.Resumed(ctx, client.ResumedRequest{ID: "vm-1", Hostname: "clone-1"})
			if err != nil {
				t.Fatalf("Resumed: %v (%+v)", err, res)
			}
			// The client filled in the host's randomness and time.
			g.mu.Lock()
			n, zero, clock := len(g.entropy), strings.Count(string(g.entropy), "\x00"), g.clock
			g.mu.Unlock()
			if n != client.DefaultResumeEntropy || zero > n/8 {
				t.Errorf("guest got %d bytes of entropy, %d of them zero", n, zero)
			}
			if clock.Before(sent) || clock.After(time.Now()) {
				t.Errorf("guest clock set to %v, sent at %v", clock, sent)
			}
			data, err := os.ReadFile(filepath.Join(g.env.SSHDir, "ssh_host_ed25519_key.pub"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.HostKeys) != 1 || res.HostKeys[0] != strings.TrimSpace(string(data)) || strings.Contains(string(data), "parent") {
				t.Errorf("answer's keys %q, file holds %q", res.HostKeys, data)
			}
			if b, _ := os.ReadFile(filepath.Join(g.env.EtcDir, "hostname")); string(b) != "clone-1\n" {
				t.Errorf("hostname file %q", b)
			}
			// Again with the same request: the same keys.
			res2, err := c.Resumed(ctx, client.ResumedRequest{ID: "vm-1", Hostname: "clone-1"})
			if err != nil || !slices.Equal(res2.HostKeys, res.HostKeys) {
				t.Errorf("repeat: %v, keys %q then %q", err, res.HostKeys, res2.HostKeys)
			}
		})
	}
}

func TestResumedFailedDutyIsAnError(t *testing.T) {
	g := newResumeGuest(t)
	g.env.SetClock = func(time.Time) error { return errors.New("clock_settime: operation not permitted") }
	c := client.New(client.NetOpener("unix", agenttest.Serve(t, agent.Options{Resume: boot.Resumer(g.env)})), client.Config{})
	res, err := c.Resumed(context.Background(), client.ResumedRequest{ID: "vm-2"})
	var re *client.ResumeError
	if !errors.As(err, &re) || len(re.Failed) != 1 || re.Failed[0].Duty != boot.DutyClock {
		t.Fatalf("got %v, want a ResumeError naming the clock", err)
	}
	if !strings.Contains(err.Error(), "operation not permitted") {
		t.Errorf("%q does not say why", err)
	}
	if len(res.HostKeys) != 1 {
		t.Errorf("the keys made are still returned: %+v", res)
	}
}

func TestResumedRefusesABadRequestOnTheHost(t *testing.T) {
	c := client.New(func(context.Context) (net.Conn, error) {
		t.Fatal("a stream was opened for an invalid request")
		return nil, nil
	}, client.Config{})
	_, err := c.Resumed(context.Background(), client.ResumedRequest{ID: "vm-3", Network: &client.ResumedNetwork{Address: netip.MustParsePrefix("fd00::1/64")}})
	if err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Errorf("got %v", err)
	}
}

// oldAgent answers as an agent built before resume existed: a hello
// without the capability, then, for the frame type it does not know, the
// error its frame reader gives.
func oldAgent(t *testing.T) client.OpenFunc {
	t.Helper()
	sock := filepath.Join(testutil.ShortDir(t, "bgt"), "old.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			pc := proto.NewConn(c)
			if f, err := pc.Next(); err == nil && f.Type == proto.TypeHello {
				_ = pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "v0.9.0", Capabilities: []string{proto.CapExec, proto.CapHealth}})
				_ = pc.WriteError(&proto.RemoteError{Code: proto.CodeMalformedFrame, Message: "malformed frame: unknown frame type 0x18"})
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return client.NetOpener("unix", sock)
}

func TestResumedOnAnOldAgentSaysRebuildTheImage(t *testing.T) {
	for name, open := range map[string]client.OpenFunc{
		"before resume":    oldAgent(t),
		"without the hook": client.NetOpener("unix", agenttest.Serve(t, agent.Options{})),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := client.New(open, client.Config{}).Resumed(context.Background(), client.ResumedRequest{ID: "vm-4"})
			if !errors.Is(err, client.ErrAgentTooOld) || !strings.Contains(err.Error(), "too old for resume (rebuild the image)") {
				t.Fatalf("got %v, want ErrAgentTooOld", err)
			}
		})
	}
}

// lyingAgent claims to serve resume and answers with ans.
func lyingAgent(t *testing.T, ans string) client.OpenFunc {
	t.Helper()
	sock := filepath.Join(testutil.ShortDir(t, "bgt"), "lie.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		pc := proto.NewConn(c)
		if f, err := pc.Next(); err == nil && f.Type == proto.TypeHello {
			_ = pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "liar", Capabilities: []string{proto.CapResume}})
			if f, err := pc.Next(); err == nil && f.Type == proto.TypeResumed {
				_ = pc.WriteFrame(proto.TypeOK, []byte(ans))
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return client.NetOpener("unix", sock)
}

func TestResumedRefusesAHostileAnswer(t *testing.T) {
	ans := `{"steps":[{"duty":"ssh-host-keys","status":"done"}],"host_keys":["ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 AAAA"]}`
	_, err := client.New(lyingAgent(t, ans), client.Config{}).Resumed(context.Background(), client.ResumedRequest{ID: "vm-5"})
	if !proto.IsFrameError(err) {
		t.Fatalf("got %v, want a malformed-frame error", err)
	}
}
