package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"banger/internal/guest/proto"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// Options configure the agent. The zero value serves exec, copies, port
// forwarding and health; shutdown, reboot and time sync are refused as not
// supported until their hooks are set.
type Options struct {
	// Version is the agent's software version for hellos and health.
	// Empty means "dev".
	Version string
	// Protocol overrides the protocol version the agent speaks. Zero means
	// proto.Version; tests set it to check version refusal.
	Protocol int
	// Ready reports whether boot duties are done. Nil means always ready.
	Ready func() bool
	// Uptime returns how long the guest has been up. Nil reads the kernel's
	// uptime.
	Uptime func() (time.Duration, error)
	// PowerOff and Reboot are called after the agent has acknowledged the
	// request. The binary passes SystemPowerOff and SystemReboot; tests pass
	// recorders.
	PowerOff func() error
	Reboot   func() error
	// SetClock sets the system clock. The binary passes SystemSetClock.
	SetClock func(time.Time) error
	// Resume gives a clone resumed from a snapshot its own identity (the
	// binary passes boot.Resumer). Nil refuses resumed requests as not
	// supported, and the hello does not announce proto.CapResume.
	Resume func(context.Context, proto.ResumedRequest) proto.ResumedResult
	// Logf receives one line per failed stream. Nil discards.
	Logf func(format string, args ...any)
	// ExecWaitDelay bounds how long output is still forwarded after a
	// command exits while something it left behind keeps its stdout open.
	// Zero means 2s.
	ExecWaitDelay time.Duration
}

func (o *Options) fill() {
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Protocol == 0 {
		o.Protocol = proto.Version
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	if o.Uptime == nil {
		o.Uptime = SystemUptime
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ExecWaitDelay == 0 {
		o.ExecWaitDelay = 2 * time.Second
	}
}

type server struct {
	opts Options

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve accepts streams on ln and serves one request on each, concurrently,
// until ctx is done or ln fails. Before returning it closes ln and every open
// stream (killing commands still running) and waits for their handlers. It
// returns nil when ctx ended it, else the accept error.
func Serve(ctx context.Context, ln net.Listener, opts Options) error {
	opts.fill()
	s := &server{opts: opts, conns: map[net.Conn]struct{}{}}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	err := s.acceptLoop(ctx, ln)
	ln.Close()
	s.closeAll()
	s.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ServeMux runs a yamux server over conn (for example a virtio-serial port)
// and serves each stream the host opens, as Serve does. It returns when ctx
// is done (nil) or the session ends (an error: the host went away or sent
// garbage); the caller reopens the port and calls ServeMux again.
func ServeMux(ctx context.Context, conn io.ReadWriteCloser, opts Options) error {
	sess, err := yamux.Server(conn, proto.MuxConfig())
	if err != nil {
		conn.Close()
		return fmt.Errorf("start multiplexer: %w", err)
	}
	defer sess.Close()
	err = Serve(ctx, sess, opts)
	if err != nil {
		return fmt.Errorf("multiplexed session ended: %w", err)
	}
	return nil
}

func (s *server) acceptLoop(ctx context.Context, ln net.Listener) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				s.opts.Logf("agent: accept: %v; retrying in %v", err, backoff)
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return fmt.Errorf("accept guest-agent stream: %w", err)
		}
		backoff = 5 * time.Millisecond
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(ctx, c)
		}()
	}
}

func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

func (s *server) hello() proto.Hello {
	caps := []string{proto.CapExec, proto.CapPTY, proto.CapCopyIn, proto.CapCopyOut, proto.CapForward, proto.CapHealth}
	if s.opts.PowerOff != nil {
		caps = append(caps, proto.CapShutdown)
	}
	if s.opts.Reboot != nil {
		caps = append(caps, proto.CapReboot)
	}
	if s.opts.SetClock != nil {
		caps = append(caps, proto.CapSyncTime)
	}
	if s.opts.Resume != nil {
		caps = append(caps, proto.CapResume)
	}
	return proto.Hello{Protocol: s.opts.Protocol, Version: s.opts.Version, Capabilities: caps}
}

// handle serves the single request of one stream. It owns c and closes it.
func (s *server) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	pc := proto.NewConn(c)
	fail := func(err error) {
		s.opts.Logf("agent: stream %v: %v", c.RemoteAddr(), err)
		_ = pc.WriteError(proto.ErrorFor(err))
	}

	f, err := pc.Next()
	if err != nil {
		if proto.IsFrameError(err) {
			fail(err)
		}
		return
	}
	if f.Type != proto.TypeHello {
		fail(proto.Errorf(proto.CodeBadRequest, "expected a hello frame first, got %s", f.Type))
		return
	}
	peer, err := proto.DecodeHello(f.Payload)
	if err != nil {
		fail(err)
		return
	}
	if err := pc.WriteJSON(proto.TypeHello, s.hello()); err != nil {
		return
	}
	if err := proto.CheckCompatible(peer.Protocol, s.opts.Protocol); err != nil {
		fail(err)
		return
	}

	f, err = pc.Next()
	if err != nil {
		if proto.IsFrameError(err) {
			fail(err)
		}
		return // the host only wanted the hello
	}
	var herr error
	switch f.Type {
	case proto.TypeExec:
		herr = s.exec(ctx, c, pc, f)
	case proto.TypeCopyIn:
		herr = s.copyIn(ctx, c, pc, f)
	case proto.TypeCopyOut:
		herr = s.copyOut(ctx, c, pc, f)
	case proto.TypeForward:
		herr = s.forward(ctx, c, pc, f)
	case proto.TypeShutdown:
		herr = s.power(c, pc, s.opts.PowerOff, "shutdown")
	case proto.TypeReboot:
		herr = s.power(c, pc, s.opts.Reboot, "reboot")
	case proto.TypeSyncTime:
		herr = s.syncTime(pc, f)
	case proto.TypeHealth:
		herr = s.health(pc)
	case proto.TypeResumed:
		herr = s.resumed(ctx, pc, f)
	default:
		herr = proto.Errorf(proto.CodeBadRequest, "%s frame is not a request", f.Type)
	}
	if herr != nil {
		fail(herr)
	}
}

func (s *server) power(c net.Conn, pc *proto.Conn, hook func() error, what string) error {
	if hook == nil {
		return proto.Errorf(proto.CodeNotSupported, "%s is not supported by this agent", what)
	}
	if err := pc.WriteJSON(proto.TypeOK, struct{}{}); err != nil {
		return nil
	}
	c.Close()
	if err := hook(); err != nil {
		s.opts.Logf("agent: %s: %v", what, err)
	}
	return nil
}

func (s *server) syncTime(pc *proto.Conn, f proto.Frame) error {
	if s.opts.SetClock == nil {
		return proto.Errorf(proto.CodeNotSupported, "time sync is not supported by this agent")
	}
	var req proto.SyncTimeRequest
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	if err := s.opts.SetClock(req.Time()); err != nil {
		return fmt.Errorf("set the clock to %s: %w", req.Time().UTC().Format(time.RFC3339Nano), err)
	}
	return pc.WriteJSON(proto.TypeOK, struct{}{})
}

func (s *server) health(pc *proto.Conn) error {
	up, err := s.opts.Uptime()
	if err != nil {
		return fmt.Errorf("read uptime: %w", err)
	}
	return pc.WriteJSON(proto.TypeOK, proto.HealthResult{
		UptimeMillis: up.Milliseconds(),
		AgentVersion: s.opts.Version,
		Ready:        s.opts.Ready(),
	})
}

// watchHangup reads from a stream on which the host should send nothing
// more, and closes c when the host goes away or sends anything, so that a
// handler blocked writing to a vanished host wakes up. The returned function
// stops the watch (by closing c) and waits for it.
func watchHangup(c net.Conn, r *proto.Reader) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.Next()
		c.Close()
	}()
	return func() {
		c.Close()
		<-done
	}
}

// SystemUptime reads the kernel's uptime.
func SystemUptime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}
