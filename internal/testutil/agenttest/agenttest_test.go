package agenttest

import (
	"context"
	"os"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
)

func TestServeAnswersAndStops(t *testing.T) {
	var sock string
	t.Run("inner", func(t *testing.T) {
		sock = Serve(t, agent.Options{Version: "agenttest"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h, err := client.New(client.NetOpener("unix", sock), client.Config{Version: "test"}).Hello(ctx)
		if err != nil || h.Version != "agenttest" {
			t.Fatalf("hello = %+v, %v", h, err)
		}
	})
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s still there after its test: %v", sock, err)
	}
}
