package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"banger/internal/guest/proto"
)

// forwardDialTimeout bounds the connection to the guest-local port.
const forwardDialTimeout = 10 * time.Second

func (s *server) forward(ctx context.Context, c net.Conn, pc *proto.Conn, f proto.Frame) error {
	var req proto.ForwardRequest
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	if req.Port == 0 {
		return proto.Errorf(proto.CodeBadRequest, "forward: port 0 is not a port")
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(req.Port))
	d := net.Dialer{Timeout: forwardDialTimeout}
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return proto.Errorf(proto.CodeFailed, "connect to %s in the guest: %v", addr, err)
	}
	defer tcp.Close()
	if err := pc.WriteJSON(proto.TypeOK, struct{}{}); err != nil {
		return nil
	}

	// Guest to host: bytes, then an EOF frame when the guest side closes.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.Copy(pc.DataWriter(proto.TypeData), tcp); err == nil {
			_ = pc.WriteFrame(proto.TypeEOF, nil)
		} else {
			c.Close()
		}
	}()

	// Host to guest: an EOF frame half-closes the TCP connection.
	_, err = io.Copy(tcp, proto.NewDataReader(pc.Reader, proto.TypeData))
	if err == nil {
		if cw, ok := tcp.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	} else {
		tcp.Close()
		c.Close()
	}
	<-done
	if proto.IsFrameError(err) {
		return err
	}
	var re *proto.RemoteError
	if errors.As(err, &re) {
		s.opts.Logf("agent: forward to %s: host reported: %v", addr, re.Message)
	}
	return nil
}
