package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/testutil"
	"banger/internal/testutil/agenttest"
)

func sh(script string) client.ExecRequest {
	return client.ExecRequest{Argv: []string{"sh", "-c", script}}
}

func TestExecExitCodesAndOutput(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		for _, code := range []int{0, 7} {
			var out, errb bytes.Buffer
			st, err := c.Exec(ctx, sh(fmt.Sprintf("echo out; echo err >&2; exit %d", code)), nil, &out, &errb)
			if err != nil {
				t.Fatalf("exit %d: %v", code, err)
			}
			if st.Code != code || st.Signal != "" {
				t.Errorf("got %v, want exit status %d", st, code)
			}
			if out.String() != "out\n" || errb.String() != "err\n" {
				t.Errorf("stdout %q stderr %q", out.String(), errb.String())
			}
		}
	})
}

func TestExecKilledBySignal(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		st, err := c.Exec(context.Background(), sh("kill -KILL $$"), nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Signal != "SIGKILL" || st.Code != 128+9 {
			t.Fatalf("got %+v, want killed by SIGKILL", st)
		}
	})
}

func TestExecSignalForwarded(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		out := newNotifyWriter("ready")
		p, err := c.Start(context.Background(), sh(`trap 'echo got-term; exit 42' TERM; echo ready; sleep 1000 & wait`), nil, out, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-out.seen
		if err := p.Signal("TERM"); err != nil {
			t.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if st.Code != 42 || !strings.Contains(out.String(), "got-term") {
			t.Fatalf("got %v and output %q, want exit 42 from the trap", st, out.String())
		}
	})
}

func TestExecStdin(t *testing.T) {
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		in := bytes.Repeat([]byte("0123456789abcdef"), 100000) // 1.6 MB, several frames
		var out bytes.Buffer
		st, err := c.Exec(context.Background(), client.ExecRequest{Argv: []string{"cat"}}, bytes.NewReader(in), &out, nil)
		if err != nil || st.Code != 0 {
			t.Fatalf("%v %v", st, err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("cat returned %d bytes, want %d", out.Len(), len(in))
		}
		// No stdin: the command sees end of input at once.
		out.Reset()
		if _, err := c.Exec(context.Background(), sh("wc -c"), nil, &out, nil); err != nil || strings.TrimSpace(out.String()) != "0" {
			t.Fatalf("wc -c on empty stdin: %q %v", out.String(), err)
		}
	})
}

func TestExecRequestDetails(t *testing.T) {
	path := agenttest.Serve(t, agent.Options{})
	c := client.New(client.NetOpener("unix", path), client.Config{})
	ctx := context.Background()
	dir := t.TempDir()
	var out bytes.Buffer
	req := client.ExecRequest{Argv: []string{"sh", "-c", `printf '%s|%s|%s' "$FOO" "$PWD" "$HOME"`}, Env: []string{"FOO=bar baz"}, Dir: dir}
	if _, err := c.Exec(ctx, req, nil, &out, nil); err != nil {
		t.Fatal(err)
	}
	home, _ := os.UserHomeDir()
	if want := "bar baz|" + dir + "|" + home; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}

	_, err := c.Exec(ctx, client.ExecRequest{Argv: []string{"no-such-command-xyz"}}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing command: %v", err)
	}
	_, err = c.Exec(ctx, client.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "/no/such/dir") {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := c.Exec(ctx, client.ExecRequest{}, nil, nil, nil); err == nil {
		t.Error("empty argv accepted")
	}

	testutil.NeedRoot(t, "switch users")
	out.Reset()
	req = client.ExecRequest{Argv: []string{"id", "-u"}, User: "nobody"}
	if _, err := c.Exec(ctx, req, nil, &out, nil); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != "65534" {
		t.Errorf("id -u as nobody: %q", out.String())
	}
}

func TestExecContextCancelKillsCommand(t *testing.T) {
	path := agenttest.Serve(t, agent.Options{})
	c := client.New(client.NetOpener("unix", path), client.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	out := newNotifyWriter("\n")
	p, err := c.Start(ctx, sh("echo $$; exec sleep 1000"), nil, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-out.seen
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v", err)
	}
	// The agent kills the command's group when the host goes away; wait
	// (without a clock) until it is gone or a zombie being reaped.
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

func requirePTY(t *testing.T) {
	f, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	f.Close()
}

func TestExecPTY(t *testing.T) {
	requirePTY(t)
	eachTransport(t, agent.Options{}, func(t *testing.T, c *client.Client) {
		ctx := context.Background()
		var out bytes.Buffer
		req := sh("test -t 0 && test -t 1 && echo is-a-tty; echo TERM=$TERM")
		req.PTY = true
		st, err := c.Exec(ctx, req, nil, &out, nil)
		if err != nil || st.Code != 0 {
			t.Fatalf("%v %v", st, err)
		}
		if !strings.Contains(out.String(), "is-a-tty") || !strings.Contains(out.String(), "TERM=xterm") {
			t.Fatalf("output %q", out.String())
		}

		// Without a pty the same test fails.
		out.Reset()
		st, err = c.Exec(ctx, sh("test -t 0"), nil, &out, nil)
		if err != nil || st.Code != 1 {
			t.Fatalf("without pty: %v %v", st, err)
		}

		// Resize while running changes what stty reports.
		req = sh("stty size; read x; stty size")
		req.PTY, req.Rows, req.Cols = true, 24, 80
		stdinR, stdinW := io.Pipe()
		w := newNotifyWriter("24 80")
		p, err := c.Start(ctx, req, stdinR, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-w.seen
		if err := p.Resize(50, 120); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(stdinW, "\n"); err != nil {
			t.Fatal(err)
		}
		st, err = p.Wait()
		stdinW.Close()
		if err != nil || st.Code != 0 {
			t.Fatalf("%v %v", st, err)
		}
		if !strings.Contains(w.String(), "50 120") {
			t.Fatalf("stty after resize: %q", w.String())
		}
	})
}

// patternReader yields n bytes of a repeating random pattern and records
// the largest HeapInuse seen every 16 MiB.
type patternReader struct {
	left, sinceCheck int64
	pattern          []byte
	off              int
	crc              uint32
	maxHeap          uint64
}

func newPatternReader(n int64) *patternReader {
	p := make([]byte, 1<<20+13)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return &patternReader{left: n, pattern: p}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.pattern[p.off:])
	n = int(min(int64(n), p.left))
	p.crc = crc32.Update(p.crc, crc32.IEEETable, b[:n])
	p.off = (p.off + n) % len(p.pattern)
	p.left -= int64(n)
	p.sinceCheck += int64(n)
	if p.sinceCheck >= 16<<20 {
		p.sinceCheck = 0
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p.maxHeap = max(p.maxHeap, ms.HeapInuse)
	}
	return n, nil
}

type crcWriter struct {
	n   int64
	crc uint32
}

func (w *crcWriter) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	w.crc = crc32.Update(w.crc, crc32.IEEETable, b)
	return len(b), nil
}

func TestExecLargeStream(t *testing.T) {
	size := int64(256 << 20)
	if os.Getenv("BANGER_TEST_LARGE") == "1" {
		size = 1 << 30
	}
	if testing.Short() {
		t.Skip("streams 256 MiB; skipped with -short")
	}
	for _, tr := range transports {
		if tr.name == "firecracker" {
			continue // same byte path as unix, plus a splice
		}
		t.Run(tr.name, func(t *testing.T) {
			c := client.New(tr.open(t, agent.Options{}), client.Config{})
			runtime.GC()
			in := newPatternReader(size)
			out := &crcWriter{}
			st, err := c.Exec(context.Background(), client.ExecRequest{Argv: []string{"cat"}}, in, out, nil)
			if err != nil || st.Code != 0 {
				t.Fatalf("%v %v", st, err)
			}
			if out.n != size || out.crc != in.crc {
				t.Fatalf("got %d bytes crc %08x, want %d bytes crc %08x", out.n, out.crc, size, in.crc)
			}
			const limit = 64 << 20
			if in.maxHeap > limit {
				t.Fatalf("heap in use reached %d MiB while streaming, limit %d MiB", in.maxHeap>>20, limit>>20)
			}
			t.Logf("streamed %d MiB, max heap in use %d MiB", size>>20, in.maxHeap>>20)
		})
	}
}

func TestConcurrentExecOverOneMux(t *testing.T) {
	m := serveMux(t, agent.Options{})
	c := client.New(m.Open, client.Config{})
	const n = 32
	var wg, started sync.WaitGroup
	errs := make(chan error, n)
	release := make(chan struct{})
	for i := range n {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			// Every command waits for its stdin, released only once all
			// 32 have started, so they all run at the same time.
			r, w := io.Pipe()
			var out bytes.Buffer
			p, err := c.Start(context.Background(), sh(`read line; echo "$line-$0"`), r, &out, nil)
			started.Done()
			if err != nil {
				errs <- err
				return
			}
			go func() {
				<-release
				fmt.Fprintf(w, "stream%d\n", i)
				w.Close()
			}()
			st, err := p.Wait()
			if err != nil || st.Code != 0 {
				errs <- fmt.Errorf("stream %d: %v %v", i, st, err)
				return
			}
			if want := fmt.Sprintf("stream%d-sh\n", i); out.String() != want {
				errs <- fmt.Errorf("stream %d: got %q, want %q", i, out.String(), want)
			}
		}()
	}
	started.Wait()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
