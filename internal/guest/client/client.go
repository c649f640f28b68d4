package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"banger/internal/guest/proto"
)

// Types shared with the wire format, so callers need not import proto.
type (
	ExecRequest  = proto.ExecRequest
	ExitStatus   = proto.Exit
	HealthResult = proto.HealthResult
	Hello        = proto.Hello
)

// Config tunes a Client.
type Config struct {
	// Version is the host's software version sent in hellos; empty means "dev".
	Version string
	// Protocol overrides the protocol version the client speaks. Zero means
	// proto.Version; tests set it to check version refusal.
	Protocol int
}

// Client runs requests against one guest agent. It is safe for concurrent
// use: every request opens its own stream.
type Client struct {
	open  OpenFunc
	hello proto.Hello
}

// New returns a Client that opens streams with open.
func New(open OpenFunc, cfg Config) *Client {
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = proto.Version
	}
	return &Client{open: open, hello: proto.Hello{Protocol: cfg.Protocol, Version: cfg.Version}}
}

// stream is one open request stream whose hellos have been exchanged.
type stream struct {
	nc net.Conn
	*proto.Conn
	agent proto.Hello
	ctx   context.Context
	stop  func() bool
	once  sync.Once
}

// start opens a stream, sends the hello and the request (if t is not zero)
// without waiting, then reads and checks the agent's hello.
func (c *Client) start(ctx context.Context, t proto.Type, req any) (*stream, error) {
	nc, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	s := &stream{nc: nc, Conn: proto.NewConn(nc), ctx: ctx}
	// Closing a multiplexed (yamux) stream is a half-close that leaves a
	// pending read waiting for the peer's close: the deadline ends it at
	// once, whatever the transport.
	s.stop = context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Now())
		nc.Close()
	})
	err = s.WriteJSON(proto.TypeHello, c.hello)
	if err == nil && t != 0 {
		if req == nil {
			err = s.WriteFrame(t, nil)
		} else {
			err = s.WriteJSON(t, req)
		}
	}
	// A write error is not final: the agent may have refused the hello or
	// the request and closed, and its answer says why.
	agent, herr := s.readHello()
	if herr != nil {
		s.close()
		return nil, s.cause(herr)
	}
	if verr := proto.CheckCompatible(c.hello.Protocol, agent.Protocol); verr != nil {
		s.close()
		return nil, verr
	}
	if err != nil {
		if f, rerr := s.Next(); rerr == nil && f.Type == proto.TypeError {
			err = proto.DecodeError(f)
		} else {
			err = fmt.Errorf("send request to guest agent: %w", err)
		}
		s.close()
		return nil, s.cause(err)
	}
	s.agent = agent
	return s, nil
}

func (s *stream) readHello() (proto.Hello, error) {
	f, err := s.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return proto.Hello{}, errors.New("guest agent closed the stream before its hello")
		}
		return proto.Hello{}, fmt.Errorf("read guest agent hello: %w", err)
	}
	switch f.Type {
	case proto.TypeHello:
		return proto.DecodeHello(f.Payload)
	case proto.TypeError:
		return proto.Hello{}, proto.DecodeError(f)
	default:
		return proto.Hello{}, &proto.MalformedFrameError{Reason: fmt.Sprintf("expected the agent's hello, got a %s frame", f.Type)}
	}
}

// result reads the agent's answer to the request: an OK frame decoded into
// v (when v is not nil), or an error frame.
func (s *stream) result(v any) error {
	f, err := s.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return s.cause(errors.New("guest agent closed the stream without answering"))
		}
		return s.cause(err)
	}
	switch f.Type {
	case proto.TypeOK:
		if v != nil {
			return proto.DecodeJSON(f, v)
		}
		return nil
	case proto.TypeError:
		return proto.DecodeError(f)
	default:
		return &proto.MalformedFrameError{Reason: fmt.Sprintf("expected an answer, got a %s frame", f.Type)}
	}
}

// cause prefers the context's error: a cancelled request fails because
// its stream was closed, which is not the interesting part.
func (s *stream) cause(err error) error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx)
	}
	return err
}

func (s *stream) close() {
	s.once.Do(func() {
		s.stop()
		s.nc.Close()
	})
}

// Hello exchanges hellos with the agent and returns the agent's.
func (c *Client) Hello(ctx context.Context) (Hello, error) {
	s, err := c.start(ctx, 0, nil)
	if err != nil {
		return Hello{}, err
	}
	s.close()
	return s.agent, nil
}

// Health asks the agent for its uptime, version and readiness.
func (c *Client) Health(ctx context.Context) (HealthResult, error) {
	var h HealthResult
	err := c.simple(ctx, proto.TypeHealth, nil, &h)
	return h, err
}

// Shutdown asks the guest to power off. The agent acknowledges before it
// acts, so a nil error means the request was accepted, not that the VM is
// down: the caller waits for the VMM process to exit.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.simple(ctx, proto.TypeShutdown, nil, nil)
}

// Reboot asks the guest to restart, acknowledged like Shutdown.
func (c *Client) Reboot(ctx context.Context) error {
	return c.simple(ctx, proto.TypeReboot, nil, nil)
}

// SyncTime sets the guest's clock to t.
func (c *Client) SyncTime(ctx context.Context, t time.Time) error {
	return c.simple(ctx, proto.TypeSyncTime, proto.SyncTimeRequest{UnixNano: t.UnixNano()}, nil)
}

func (c *Client) simple(ctx context.Context, t proto.Type, req, res any) error {
	s, err := c.start(ctx, t, req)
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	defer s.close()
	if err := s.result(res); err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	return nil
}
