package daemon

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guest/client"
	"banger/internal/guest/proto"
)

// A guest asked for its SSH host keys may answer with anything, of any
// length: bangerd must not keep it all in memory.
func TestGuestHostKeysBoundsTheAnswer(t *testing.T) {
	const flood = 64 << 20
	dir, err := os.MkdirTemp("", "bgk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- 0
			return
		}
		defer c.Close()
		n := 0
		defer func() { sent <- n }()
		pc := proto.NewConn(c)
		if f, err := pc.Next(); err != nil || f.Type != proto.TypeHello {
			return
		}
		if pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "hostile", Capabilities: []string{proto.CapExec}}) != nil {
			return
		}
		if f, err := pc.Next(); err != nil || f.Type != proto.TypeExec {
			return
		}
		if pc.WriteJSON(proto.TypeOK, struct{}{}) != nil {
			return
		}
		go func() { // whatever else the host sends
			for {
				if _, err := pc.Next(); err != nil {
					return
				}
			}
		}()
		chunk := bytes.Repeat([]byte("ssh-ed25519 AAAA "), proto.ChunkSize/17)
		for n < flood {
			if pc.WriteFrame(proto.TypeStdout, chunk) != nil {
				return
			}
			n += len(chunk)
		}
		_ = pc.WriteJSON(proto.TypeExit, proto.Exit{Code: 0})
	}()
	keys, err := guestHostKeys(context.Background(), client.New(client.NetOpener("unix", sock), client.Config{}))
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a 64 MiB answer: %d lines, err = %v; want a refusal", len(keys), err)
	}
	if n := <-sent; n >= flood {
		t.Errorf("the guest could send all %d bytes", n)
	}
}
