package client_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil"
	"banger/internal/testutil/agenttest"
	"banger/internal/testutil/treestate"
)

// makeTree builds a tree with what a copy must keep: modes, symlinks
// (relative and dangling absolute), an empty directory, and owners.
func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "sub", "deep"), 0o755))
	must(os.Mkdir(filepath.Join(root, "empty"), 0o711))
	must(os.WriteFile(filepath.Join(root, "file.txt"), []byte("hello\n"), 0o640))
	must(os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "deep", "big"), bytes.Repeat([]byte("z"), 3<<20), 0o600))
	must(os.Symlink("../file.txt", filepath.Join(root, "sub", "rel")))
	must(os.Symlink("/does/not/exist", filepath.Join(root, "dangling")))
	must(os.Chmod(filepath.Join(root, "sub"), 0o750))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(root, "file.txt"), 1234, 5678))
		must(os.Lchown(filepath.Join(root, "sub", "rel"), 4321, 8765))
	}
	return root
}

// sameTree compares two snapshots, owners only as root, modification times
// not at all.
func sameTree(t *testing.T, want, got map[string]treestate.Entry) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("got %d entries, want %d", len(got), len(want))
	}
	for p, w := range want {
		g := got[p]
		if os.Geteuid() != 0 {
			g.UID, g.GID, w.UID, w.GID = 0, 0, 0, 0
		}
		g.MTime, w.MTime = 0, 0
		if g != w {
			t.Errorf("%s: got %+v, want %+v", p, g, w)
		}
	}
}

func TestCopyInAndOut(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		src := makeTree(t)
		guestDir := filepath.Join(t.TempDir(), "guest", "dst") // created by the agent
		if err := c.CopyIn(ctx, src, guestDir); err != nil {
			t.Fatal(err)
		}
		want := treestate.Snapshot(t, src)
		sameTree(t, want, treestate.Snapshot(t, filepath.Join(guestDir, "tree")))

		hostDir := t.TempDir()
		if err := c.CopyOut(ctx, filepath.Join(guestDir, "tree"), hostDir, client.CopyOutOptions{Preserve: true}); err != nil {
			t.Fatal(err)
		}
		sameTree(t, want, treestate.Snapshot(t, filepath.Join(hostDir, "tree")))

		// A single file and a missing source.
		if err := c.CopyOut(ctx, filepath.Join(guestDir, "tree", "run.sh"), hostDir, client.CopyOutOptions{Preserve: true}); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(filepath.Join(hostDir, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("run.sh: %v %v", fi, err)
		}
		err := c.CopyOut(ctx, "/no/such/path", hostDir, client.CopyOutOptions{})
		if err == nil || !strings.Contains(err.Error(), "/no/such/path") {
			t.Fatalf("missing source: %v", err)
		}
		if err := c.CopyIn(ctx, src, "relative/dir"); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
			t.Fatalf("relative destination: %v", err)
		}
		if err := c.CopyIn(ctx, "/no/such/source", guestDir); err == nil {
			t.Fatal("missing host source accepted")
		}
	})
}

func TestCopyInRefusesTraversal(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		base := t.TempDir()
		dst := filepath.Join(base, "dst")
		mk := func(entries ...*tar.Header) *bytes.Buffer {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, h := range entries {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if h.Size > 0 {
					_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
				}
			}
			_ = tw.Close()
			// Pad with enough data that the agent refuses mid-stream.
			b.Write(make([]byte, 2<<20))
			return &b
		}
		bad := map[string]*bytes.Buffer{
			"dotdot":   mk(&tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}),
			"absolute": mk(&tar.Header{Name: base + "/evil", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}),
			"symlink": mk(&tar.Header{Name: "l", Linkname: base, Typeflag: tar.TypeSymlink},
				&tar.Header{Name: "l/evil", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}),
		}
		for name, tr := range bad {
			err := c.CopyInTar(ctx, tr, dst)
			if err == nil || !strings.Contains(err.Error(), "refusing tar entry") {
				t.Errorf("%s: got %v, want a refusal", name, err)
			}
			if _, err := os.Lstat(filepath.Join(base, "evil")); err == nil {
				t.Fatalf("%s: a file was written outside the destination", name)
			}
		}
		// The agent is still serving.
		if _, err := c.Health(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// echoUpper serves one TCP connection on 127.0.0.1: it reads to EOF and
// answers with the upper-cased input.
func echoUpper(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			b, _ := io.ReadAll(c)
			_, _ = c.Write(bytes.ToUpper(b))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestForward(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		port := echoUpper(t)
		conn, err := c.Forward(ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		msg := bytes.Repeat([]byte("ping "), 200000) // 1 MB each way
		go func() {
			_, _ = conn.Write(msg)
			_ = conn.(interface{ CloseWrite() error }).CloseWrite()
		}()
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.ToUpper(msg)) {
			t.Fatalf("got %d bytes back, want %d", len(got), len(msg))
		}

		// A port nobody listens on.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		closed := uint16(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		if _, err := c.Forward(ctx, closed); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("closed port: %v", err)
		}
	})
}

func TestVersionMismatchRefused(t *testing.T) {
	eachTransport(t, agent.Options{Protocol: 2}, func(t *testing.T, c *client.Client) {
		_, err := c.Health(context.Background())
		var ve *proto.VersionError
		if !errors.As(err, &ve) || ve.Agent != 2 || ve.Host != proto.Version {
			t.Fatalf("newer agent: got %v", err)
		}
		if !strings.Contains(err.Error(), "version 2") || !strings.Contains(err.Error(), "version 1") {
			t.Fatalf("message does not name both versions: %v", err)
		}
	})
	for _, tr := range transports {
		t.Run("old-agent-"+tr.name, func(t *testing.T) {
			open := tr.open(t, agent.Options{})
			c := client.New(open, client.Config{Protocol: 99})
			_, err := c.Exec(context.Background(), sh("echo should-not-run"), nil, nil, nil)
			var ve *proto.VersionError
			if !errors.As(err, &ve) || ve.Agent != proto.Version || ve.Host != 99 {
				t.Fatalf("got %v", err)
			}
			// The agent refuses too: after its hello comes a version error.
			s, err := open(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pc := proto.NewConn(s)
			_ = pc.WriteJSON(proto.TypeHello, proto.Hello{Protocol: 99, Version: "future"})
			if f, err := pc.Next(); err != nil || f.Type != proto.TypeHello {
				t.Fatalf("agent hello: %v %v", f.Type, err)
			}
			f, err := pc.Next()
			if err != nil || f.Type != proto.TypeError {
				t.Fatalf("want an error frame, got %v %v", f.Type, err)
			}
			var re *proto.RemoteError
			if !errors.As(proto.DecodeError(f), &re) || re.Code != proto.CodeVersion {
				t.Fatalf("got %v", proto.DecodeError(f))
			}
		})
	}
}

func TestBadFrameFailsOnlyItsStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := context.Background()
			open := tr.open(t, agent.Options{})
			c := client.New(open, client.Config{})
			// A command that stays alive until we feed it.
			stdinR, stdinW := io.Pipe()
			var out bytes.Buffer
			p, err := c.Start(ctx, client.ExecRequest{Argv: []string{"cat"}}, stdinR, &out, nil)
			if err != nil {
				t.Fatal(err)
			}

			expectError := func(s net.Conn, code string) {
				t.Helper()
				r := proto.NewReader(s)
				for {
					f, err := r.Next()
					if err != nil {
						t.Fatalf("want a %s error frame, stream ended: %v", code, err)
					}
					if f.Type == proto.TypeHello {
						continue
					}
					var re *proto.RemoteError
					if f.Type != proto.TypeError || !errors.As(proto.DecodeError(f), &re) || re.Code != code {
						t.Fatalf("want a %s error frame, got %s %q", code, f.Type, f.Payload)
					}
					break
				}
				if _, err := r.Next(); err == nil {
					t.Fatal("stream still open after the error frame")
				}
			}
			hello, _ := jsonHello()

			// Oversized: a valid hello, then a header announcing 2 MiB.
			s1, err := open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s1.Close()
			hdr := make([]byte, proto.HeaderSize)
			hdr[0] = byte(proto.TypeExec)
			binary.BigEndian.PutUint32(hdr[4:], 2<<20)
			_, _ = s1.Write(append(hello, hdr...))
			expectError(s1, proto.CodeFrameTooLarge)

			// Garbage instead of a hello.
			s2, err := open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			_, _ = s2.Write([]byte("GARBAGE!GARBAGE!"))
			expectError(s2, proto.CodeMalformedFrame)

			// Bad JSON in a request.
			s3, err := open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			w := proto.NewWriter(s3)
			_, _ = s3.Write(hello)
			_ = w.WriteFrame(proto.TypeExec, []byte("{not json"))
			expectError(s3, proto.CodeMalformedFrame)

			// The first stream is unharmed.
			_, _ = io.WriteString(stdinW, "still here\n")
			stdinW.Close()
			st, err := p.Wait()
			if err != nil || st.Code != 0 || out.String() != "still here\n" {
				t.Fatalf("surviving stream: %v %v %q", st, err, out.String())
			}
			if _, err := c.Health(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// jsonHello returns an encoded hello frame of the current version.
func jsonHello() ([]byte, error) {
	var b bytes.Buffer
	err := proto.NewWriter(&b).WriteJSON(proto.TypeHello, proto.Hello{Protocol: proto.Version, Version: "raw"})
	return b.Bytes(), err
}

func TestHealthPowerAndClock(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	var clock time.Time
	record := func(s string) func() error {
		return func() error { mu.Lock(); calls = append(calls, s); mu.Unlock(); return nil }
	}
	opts := agent.Options{
		Version:  "v9.9.9",
		Ready:    func() bool { return false },
		Uptime:   func() (time.Duration, error) { return 90 * time.Second, nil },
		PowerOff: record("poweroff"),
		Reboot:   record("reboot"),
		SetClock: func(t time.Time) error { mu.Lock(); clock = t; mu.Unlock(); return nil },
	}
	eachTransport(t, opts, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		mu.Lock()
		calls, clock = nil, time.Time{}
		mu.Unlock()
		h, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.AgentVersion != "v9.9.9" || h.Ready || h.Uptime() != 90*time.Second {
			t.Fatalf("health %+v", h)
		}
		hello, err := c.Hello(ctx)
		if err != nil || !hello.Has(proto.CapShutdown) || !hello.Has(proto.CapSyncTime) || hello.Version != "v9.9.9" {
			t.Fatalf("hello %+v %v", hello, err)
		}
		want := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
		if err := c.SyncTime(ctx, want); err != nil {
			t.Fatal(err)
		}
		if err := c.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		// The hooks run after the acknowledgement; a health round trip on
		// the same agent does not order them, so poll the record.
		for {
			mu.Lock()
			n := len(calls)
			mu.Unlock()
			if n == 2 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if !clock.Equal(want) {
			t.Errorf("clock set to %v, want %v", clock, want)
		}
		// Each hook runs after its own acknowledgement, so the two may run
		// in either order; both must run, once.
		got := map[string]int{}
		for _, c := range calls {
			got[c]++
		}
		if got["poweroff"] != 1 || got["reboot"] != 1 {
			t.Errorf("hooks called: %v", calls)
		}
	})

	// Without hooks the agent says the requests are not supported.
	c := client.New(client.NetOpener("unix", agenttest.Serve(t, agent.Options{})), client.Config{})
	for name, fn := range map[string]func() error{
		"shutdown": func() error { return c.Shutdown(context.Background()) },
		"reboot":   func() error { return c.Reboot(context.Background()) },
		"time":     func() error { return c.SyncTime(context.Background(), time.Now()) },
	} {
		err := fn()
		var re *proto.RemoteError
		if !errors.As(err, &re) || re.Code != proto.CodeNotSupported {
			t.Errorf("%s without hook: %v", name, err)
		}
	}
	if h, err := c.Health(context.Background()); err != nil || !h.Ready || h.Uptime() <= 0 {
		t.Errorf("default health: %+v %v", h, err)
	}
}

func TestDialFirecrackerErrors(t *testing.T) {
	agentSock := agenttest.Serve(t, agent.Options{})
	front := fakeFirecracker(t, agentSock, "1024")
	ctx := context.Background()

	// Nothing listens on that guest port: Firecracker hangs up.
	_, err := client.DialFirecracker(ctx, front, 2048)
	if err == nil || !strings.Contains(err.Error(), "without an answer") {
		t.Fatalf("wrong port: %v", err)
	}
	// No socket at all.
	_, err = client.DialFirecracker(ctx, filepath.Join(testutil.ShortDir(t, "bgt"), "none"), 1024)
	if err == nil || !strings.Contains(err.Error(), "is the VM running") {
		t.Fatalf("missing socket: %v", err)
	}
	// A front that answers something other than OK.
	path := filepath.Join(testutil.ShortDir(t, "bgt"), "bad.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	hold := make(chan struct{})
	defer func() {
		close(hold)
		ln.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			_, _ = c.Read(buf)
			if i == 0 {
				_, _ = io.WriteString(c, "ERR no such port\n")
			} else {
				<-hold // never answer
			}
			c.Close()
		}
	}()
	_, err = client.DialFirecracker(ctx, path, 1024)
	if err == nil || !strings.Contains(err.Error(), `"ERR no such port"`) {
		t.Fatalf("refusal: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = client.DialFirecracker(cctx, path, 1024)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent front: %v", err)
	}
}
