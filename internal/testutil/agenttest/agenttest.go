package agenttest

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"banger/internal/guest/agent"
	"banger/internal/testutil"
)

// Serve runs an agent with opts on a Unix socket (in a short directory of
// its own) until the test ends, and returns the socket's path. The socket
// is listening when Serve returns; an error from the agent at the end
// fails the test.
func Serve(t testing.TB, opts agent.Options) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t, "bga"), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen for the test agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Serve(ctx, ln, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the test agent ended with %v", err)
		}
	})
	return path
}
