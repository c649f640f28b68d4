package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privhelperd"
	"banger/internal/daemon/privops"
)

// helloCounter is a slog.Handler that counts the hellos a helper served.
type helloCounter struct{ n *atomic.Int32 }

func (h helloCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h helloCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h helloCounter) WithGroup(string) slog.Handler            { return h }
func (h helloCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "helper request done" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "op" && a.Value.String() == privhelper.OpHello {
				h.n.Add(1)
			}
			return true
		})
	}
	return nil
}

// noSnapshotsOps answers SnapshotsAvailable and nothing else.
type noSnapshotsOps struct{ privops.Ops }

func (noSnapshotsOps) SnapshotsAvailable(context.Context) error { return nil }

type fakeExec struct{}

func (fakeExec) For(uint32) privops.Ops { return noSnapshotsOps{} }

// TestPrivilegedSaysHelloOnce: a user's bangerd says hello to the helper
// on its first privileged call only, and again after a call found no
// helper listening.
func TestPrivilegedSaysHelloOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only so that a broken helper fails the test
	defer cancel()
	dir, err := os.MkdirTemp("", "bgpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, state := filepath.Join(dir, "helper.sock"), filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	var hellos atomic.Int32
	var knowsState atomic.Bool
	knowsState.Store(true)
	policy := privhelperd.DefaultPolicy(uint32(os.Getuid()))
	policy.StateDir = func(uint32) (string, error) {
		if !knowsState.Load() {
			return "", errors.New("no passwd entry")
		}
		return state, nil
	}
	start := func() (stop func()) {
		ln, err := privhelperd.Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		srv := &privhelperd.Server{Policy: policy, Exec: fakeExec{}, Version: "test", Log: slog.New(helloCounter{&hellos})}
		go func() { done <- srv.Serve(sctx, ln) }()
		return sync.OnceFunc(func() {
			scancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	stop := start()
	defer func() { stop() }()

	p := &privileged{socket: sock}
	for range 3 {
		ops, err := p.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ops.SnapshotsAvailable(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.disks(ctx, state); err != nil {
		t.Fatalf("disks in the state dir the helper knows: %v", err)
	}
	if n := hellos.Load(); n != 1 {
		t.Fatalf("the helper served %d hellos for four calls, want 1", n)
	}

	// The helper goes away: the call that finds it gone drops the client,
	// and once it is back the next get says hello again.
	ops, _ := p.get(ctx)
	stop()
	if err := ops.SnapshotsAvailable(ctx); err == nil || !strings.Contains(err.Error(), "reach the banger helper") {
		t.Fatalf("a call with no helper: %v", err)
	}
	if _, err := p.get(ctx); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Fatalf("get with no helper: %v", err)
	}
	knowsState.Store(false)
	stop = start()
	if _, err := p.get(ctx); err != nil {
		t.Fatal(err)
	}
	if n := hellos.Load(); n != 2 {
		t.Fatalf("the helper served %d hellos, want 2: one more after it came back", n)
	}
	// That hello named no state dir: the user is told what the helper needs.
	_, err = p.disks(ctx, state)
	if err == nil || !strings.Contains(err.Error(), "~/.local/state/banger to exist, belong to you") || strings.Contains(err.Error(), `""`) {
		t.Fatalf("disks when the helper knows no state dir: %v", err)
	}
	// close, by the vmManager at shutdown, drops the client too.
	p.close()
	if _, err := p.get(ctx); err != nil {
		t.Fatal(err)
	}
	if n := hellos.Load(); n != 3 {
		t.Fatalf("the helper served %d hellos, want 3: one more after close", n)
	}
}
