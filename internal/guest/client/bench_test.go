package client_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/yamux"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil"
)

const benchSize = 32 << 20

// sink accepts streams, reads each to EOF and answers one byte, so a raw
// copy can wait until the far side has everything.
func sink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(io.Discard, io.LimitReader(c, benchSize))
			_, _ = c.Write([]byte{1})
		}()
	}
}

// rawOpeners returns stream openers of the same kinds as the agent's
// transports, leading to a sink instead of an agent.
func rawOpener(b *testing.B, kind string) client.OpenFunc {
	switch kind {
	case "unix":
		path := filepath.Join(testutil.ShortDir(b, "bgt"), "sink.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		go sink(ln)
		b.Cleanup(func() { ln.Close() })
		return client.NetOpener("unix", path)
	default:
		guest, host := pipePair(b)
		sess, err := yamux.Server(guest, proto.MuxConfig())
		if err != nil {
			b.Fatal(err)
		}
		go sink(sess)
		m, err := client.NewMux(host)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close(); sess.Close() })
		return m.Open
	}
}

// BenchmarkCopyIn compares CopyIn of one 32 MiB file (tar, frames, extract
// to disk) with a raw copy of the same bytes over the same kind of transport.
func BenchmarkCopyIn(b *testing.B) {
	src := filepath.Join(b.TempDir(), "payload")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, io.LimitReader(newPatternReader(benchSize), benchSize)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	for _, tr := range transports {
		if tr.name == "firecracker" {
			continue
		}
		b.Run(tr.name+"/copy-in", func(b *testing.B) {
			c := client.New(tr.open(b, agent.Options{}), client.Config{})
			dst := b.TempDir()
			b.SetBytes(benchSize)
			for b.Loop() {
				if err := c.CopyIn(context.Background(), src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tr.name+"/raw", func(b *testing.B) {
			open := rawOpener(b, tr.name)
			b.SetBytes(benchSize)
			for b.Loop() {
				s, err := open(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				in, err := os.Open(src)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(s, in); err != nil {
					b.Fatal(err)
				}
				in.Close()
				if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}
