package privhelper

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Executor does the privileged work. The helper calls it only with
// requests that passed the policy.
type Executor interface {
	EnsureBridge(ctx context.Context, bridge string, subnet string) error
	TeardownBridge(ctx context.Context, bridge string) error
	CreateTap(ctx context.Context, tap, bridge string, owner uint32) error
	DeleteTap(ctx context.Context, tap string) error
	EnableIPForward(ctx context.Context) error
	LoopAttach(ctx context.Context, path string, readOnly bool) (string, error)
	LoopDetach(ctx context.Context, device string) error
}

// Server serves the helper socket.
type Server struct {
	Policy  Policy
	Exec    Executor
	Version string
	Log     *slog.Logger
}

// Listen opens the helper socket: its dir 0755, the socket 0666 (every
// caller is checked by SO_PEERCRED, so the mode is not the guard).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, errors.New("another banger helper already listens on " + path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve answers connections until ctx ends. Each connection carries one
// request and its answer.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			s.handle(ctx, c.(*net.UnixConn), log)
		}()
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn, log *slog.Logger) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	// Read the (bounded) request before answering even a refusal, so the
	// caller always gets the answer rather than a broken pipe.
	data, err := io.ReadAll(io.LimitReader(c, MaxRequest+1))
	if err != nil {
		writeResponse(c, errResponse(invalid("read request: %v", err)))
		return
	}
	uid, err := peerUID(c)
	if err != nil {
		writeResponse(c, errResponse(denied("cannot identify the caller: %v", err)))
		return
	}
	if !s.Policy.AllowedUIDs[uid] {
		log.Warn("helper request refused", "uid", uid, "reason", "uid not allowed")
		writeResponse(c, errResponse(denied("uid %d is not allowed to use the banger helper: add the user to its allow list", uid)))
		return
	}
	req, err := decodeRequest(data)
	if err != nil {
		writeResponse(c, errResponse(err))
		return
	}
	resp, err := s.dispatch(ctx, uid, req)
	if err != nil {
		log.Warn("helper request refused or failed", "uid", uid, "op", req.Op, "error", err)
		writeResponse(c, errResponse(err))
		return
	}
	log.Info("helper request done", "uid", uid, "op", req.Op)
	resp.OK = true
	writeResponse(c, resp)
}

func (s *Server) dispatch(ctx context.Context, uid uint32, r Request) (Response, error) {
	p := s.Policy
	only := func(fields map[string]bool) error {
		set := map[string]bool{"bridge": r.Bridge != "", "tap": r.Tap != "", "subnet": r.Subnet != "",
			"path": r.Path != "", "read_only": r.ReadOnly, "device": r.Device != ""}
		for f, isSet := range set {
			if isSet && !fields[f] {
				return invalid("%s does not take %q", r.Op, f)
			}
		}
		return nil
	}
	fail := func(err error) (Response, error) {
		if err == nil {
			return Response{}, nil
		}
		return Response{}, &Error{CodeFailed, err.Error()}
	}
	switch r.Op {
	case OpHello:
		if err := only(nil); err != nil {
			return Response{}, err
		}
		return Response{Version: s.Version}, nil
	case OpEnsureBridge:
		if err := only(map[string]bool{"bridge": true, "subnet": true}); err != nil {
			return Response{}, err
		}
		if err := checkIfName("bridge", r.Bridge, p.BridgePrefix); err != nil {
			return Response{}, err
		}
		sub, err := p.checkSubnet(r.Subnet)
		if err != nil {
			return Response{}, err
		}
		return fail(s.Exec.EnsureBridge(ctx, r.Bridge, sub.String()))
	case OpTeardownBridge:
		if err := only(map[string]bool{"bridge": true}); err != nil {
			return Response{}, err
		}
		if err := checkIfName("bridge", r.Bridge, p.BridgePrefix); err != nil {
			return Response{}, err
		}
		return fail(s.Exec.TeardownBridge(ctx, r.Bridge))
	case OpCreateTap:
		if err := only(map[string]bool{"tap": true, "bridge": true}); err != nil {
			return Response{}, err
		}
		if err := checkIfName("tap", r.Tap, p.TapPrefix); err != nil {
			return Response{}, err
		}
		if err := checkIfName("bridge", r.Bridge, p.BridgePrefix); err != nil {
			return Response{}, err
		}
		return fail(s.Exec.CreateTap(ctx, r.Tap, r.Bridge, uid))
	case OpDeleteTap:
		if err := only(map[string]bool{"tap": true}); err != nil {
			return Response{}, err
		}
		if err := checkIfName("tap", r.Tap, p.TapPrefix); err != nil {
			return Response{}, err
		}
		return fail(s.Exec.DeleteTap(ctx, r.Tap))
	case OpEnableForward:
		if err := only(nil); err != nil {
			return Response{}, err
		}
		return fail(s.Exec.EnableIPForward(ctx))
	case OpLoopAttach:
		if err := only(map[string]bool{"path": true, "read_only": true}); err != nil {
			return Response{}, err
		}
		real, err := p.checkPath(uid, r.Path)
		if err != nil {
			return Response{}, err
		}
		dev, err := s.Exec.LoopAttach(ctx, real, r.ReadOnly)
		if err != nil {
			return fail(err)
		}
		return Response{Device: dev}, nil
	case OpLoopDetach:
		if err := only(map[string]bool{"device": true}); err != nil {
			return Response{}, err
		}
		if err := checkLoop(r.Device); err != nil {
			return Response{}, err
		}
		return fail(s.Exec.LoopDetach(ctx, r.Device))
	}
	return Response{}, invalid("unknown operation %q", r.Op)
}

func errResponse(err error) Response {
	var e *Error
	if errors.As(err, &e) {
		return Response{Error: e.Msg, Code: e.Code}
	}
	return Response{Error: err.Error(), Code: CodeFailed}
}
