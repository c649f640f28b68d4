package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"banger/internal/guest/proto"
)

// Process is a command running in the guest.
type Process struct {
	s    *stream
	argv string
	done chan struct{}
	exit ExitStatus
	err  error

	waitOnce sync.Once
}

// Start runs req in the guest and returns once the command has started (or
// failed to). Its output is written to stdout and stderr (nil discards) as
// it arrives; stdin (nil means empty) is copied to the command in the
// background, followed by end-of-input when it returns io.EOF. With a pty,
// everything arrives on stdout. Cancelling ctx kills the command.
//
// The stdin copier ends at stdin's first Read after the command exits; for
// an interactive stdin that can block forever, pass a reader you can close.
func (c *Client) Start(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (*Process, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	s, err := c.start(ctx, proto.TypeExec, req)
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	if err := s.result(nil); err != nil {
		s.close()
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	p := &Process{s: s, argv: req.Argv[0], done: make(chan struct{})}
	if stdin == nil {
		_ = s.WriteFrame(proto.TypeEOF, nil)
	} else {
		go func() {
			// Whether stdin ended or failed, the command's input ends here.
			_, _ = io.Copy(s.DataWriter(proto.TypeStdin), stdin)
			_ = s.WriteFrame(proto.TypeEOF, nil)
		}()
	}
	go p.readOutput(discardIfNil(stdout), discardIfNil(stderr))
	return p, nil
}

func discardIfNil(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func (p *Process) readOutput(stdout, stderr io.Writer) {
	defer close(p.done)
	for {
		f, err := p.s.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("guest agent closed the stream before the command exited")
			}
			p.err = p.s.cause(err)
			return
		}
		switch f.Type {
		case proto.TypeStdout, proto.TypeStderr:
			w := stdout
			if f.Type == proto.TypeStderr {
				w = stderr
			}
			if _, err := w.Write(f.Payload); err != nil {
				p.err = fmt.Errorf("write the command's %s: %w", f.Type, err)
				p.s.close() // kills the command: nobody is reading it
				return
			}
		case proto.TypeExit:
			p.err = proto.DecodeJSON(f, &p.exit)
			return
		case proto.TypeError:
			p.err = proto.DecodeError(f)
			return
		default:
			p.err = &proto.MalformedFrameError{Reason: fmt.Sprintf("unexpected %s frame during exec", f.Type)}
			return
		}
	}
}

// Resize changes the size of the command's pseudo-terminal. Without a pty
// it does nothing.
func (p *Process) Resize(rows, cols uint16) error {
	if err := p.s.WriteJSON(proto.TypeResize, proto.Resize{Rows: rows, Cols: cols}); err != nil {
		return fmt.Errorf("resize terminal of %s: %w", p.argv, err)
	}
	return nil
}

// Signal sends a signal (e.g. "TERM", "SIGINT") to the command's process
// group (with a pty: the terminal's foreground group).
func (p *Process) Signal(name string) error {
	if err := p.s.WriteJSON(proto.TypeSignal, proto.Signal{Name: name}); err != nil {
		return fmt.Errorf("signal %s to %s: %w", name, p.argv, err)
	}
	return nil
}

// Wait waits for the command to exit and all its output to be written, then
// closes the stream. The error is about the transport or the agent; how the
// command ended is in the ExitStatus. Wait may be called more than once.
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	p.waitOnce.Do(func() {
		p.s.close()
		if p.err != nil {
			p.err = fmt.Errorf("exec %s: %w", p.argv, p.err)
		}
	})
	return p.exit, p.err
}

// Exec runs req to completion: Start then Wait.
func (c *Client) Exec(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (ExitStatus, error) {
	p, err := c.Start(ctx, req, stdin, stdout, stderr)
	if err != nil {
		return ExitStatus{}, err
	}
	return p.Wait()
}
