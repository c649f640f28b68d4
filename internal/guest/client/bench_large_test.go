package client_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/yamux"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil"
)

// largeSize is the payload of BenchmarkCopyInLarge: 1 GiB.
const largeSize = 1 << 30

// fileSink accepts streams and writes each one's first n bytes to a new file
// in dir (what an agent's copy-in must do at least), then answers one byte so
// the sender knows the far side has everything. It returns when ln closes,
// after every stream it accepted is done.
func fileSink(ln net.Listener, dir string, n int64) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			f, err := os.CreateTemp(dir, "raw-")
			if err != nil {
				return
			}
			defer os.Remove(f.Name())
			_, cerr := io.Copy(f, io.LimitReader(c, n))
			if f.Close() != nil || cerr != nil {
				return
			}
			_, _ = c.Write([]byte{1})
		}()
	}
}

// largeRawOpener returns a stream opener over the same kind of transport as
// the agent's (transport kind), leading to a fileSink instead of an agent.
func largeRawOpener(b *testing.B, kind string) client.OpenFunc {
	dir := b.TempDir()
	var ln net.Listener
	var open client.OpenFunc
	switch kind {
	case "unix", "firecracker":
		path := filepath.Join(testutil.ShortDir(b, "bgt"), "sink.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		ln = l
		if kind == "unix" {
			open = client.NetOpener("unix", path)
		} else {
			open = client.FirecrackerOpener(fakeFirecracker(b, path, "1024"), 1024)
		}
	default: // "mux": yamux over a pair of pipes, as over virtio-serial
		guest, host := pipePair(b)
		sess, err := yamux.Server(guest, proto.MuxConfig())
		if err != nil {
			b.Fatal(err)
		}
		m, err := client.NewMux(host)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		ln = sess
		open = m.Open
	}
	done := make(chan struct{})
	go func() { fileSink(ln, dir, largeSize); close(done) }()
	b.Cleanup(func() { ln.Close(); <-done })
	return open
}

// BenchmarkCopyInLarge compares CopyIn of one 1 GiB file through the guest
// agent (tar, frames, extract to a file) with a raw io.Copy of the same bytes
// over the same transport into a file. It writes 2 GiB per iteration pair, so
// it runs only with BANGER_BENCH_LARGE=1 (make bench sets it; see
// docs/performance.md). Each iteration starts after a sync(2), outside the
// timed part.
func BenchmarkCopyInLarge(b *testing.B) {
	if os.Getenv("BANGER_BENCH_LARGE") != "1" {
		b.Skip("set BANGER_BENCH_LARGE=1 to copy 1 GiB per iteration")
	}
	src := filepath.Join(b.TempDir(), "payload")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, newPatternReader(largeSize)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for _, tr := range transports {
		switch tr.name {
		case "unix", "firecracker", "mux": // the kinds largeRawOpener reproduces
		default:
			continue
		}
		b.Run(tr.name+"/copy-in", func(b *testing.B) {
			c := client.New(tr.open(b, agent.Options{}), client.Config{})
			dst := b.TempDir()
			b.SetBytes(largeSize)
			for b.Loop() {
				settle(b)
				if err := c.CopyIn(context.Background(), src, dst); err != nil {
					b.Fatal(err)
				}
			}
			fi, err := os.Stat(filepath.Join(dst, "payload"))
			if err != nil || fi.Size() != largeSize {
				b.Fatalf("copied file: %v, size %d", err, sizeOf(fi))
			}
		})
		b.Run(tr.name+"/raw", func(b *testing.B) {
			open := largeRawOpener(b, tr.name)
			b.SetBytes(largeSize)
			ack := make([]byte, 1)
			for b.Loop() {
				settle(b)
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
				if _, err := io.ReadFull(s, ack); err != nil {
					b.Fatalf("raw copy not acknowledged: %v", err)
				}
				s.Close()
			}
		})
	}
}

// settle writes back, outside the timed part, the dirty pages that earlier
// iterations left, so that each iteration pays for its own writes only.
func settle(b *testing.B) {
	b.StopTimer()
	syscall.Sync()
	b.StartTimer()
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
