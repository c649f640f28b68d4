package client

import (
	"context"
	"fmt"
	"net"
	"time"

	"banger/internal/guest/proto"
)

// Forward connects to 127.0.0.1:port inside the guest and returns the
// connection. ctx bounds only the setup; the connection lives until closed.
// The returned conn supports CloseWrite, which half-closes the guest side.
func (c *Client) Forward(ctx context.Context, port uint16) (net.Conn, error) {
	s, err := c.start(ctx, proto.TypeForward, proto.ForwardRequest{Port: port})
	if err != nil {
		return nil, fmt.Errorf("forward to guest port %d: %w", port, err)
	}
	if err := s.result(nil); err != nil {
		s.close()
		return nil, fmt.Errorf("forward to guest port %d: %w", port, err)
	}
	if !s.stop() {
		s.close()
		return nil, fmt.Errorf("forward to guest port %d: %w", port, context.Cause(ctx))
	}
	return &forwardConn{s: s, r: proto.NewDataReader(s.Reader, proto.TypeData), w: s.DataWriter(proto.TypeData)}, nil
}

type forwardConn struct {
	s *stream
	r *proto.DataReader
	w interface{ Write([]byte) (int, error) }
}

func (f *forwardConn) Read(p []byte) (int, error)         { return f.r.Read(p) }
func (f *forwardConn) Write(p []byte) (int, error)        { return f.w.Write(p) }
func (f *forwardConn) CloseWrite() error                  { return f.s.WriteFrame(proto.TypeEOF, nil) }
func (f *forwardConn) Close() error                       { return f.s.nc.Close() }
func (f *forwardConn) LocalAddr() net.Addr                { return f.s.nc.LocalAddr() }
func (f *forwardConn) RemoteAddr() net.Addr               { return f.s.nc.RemoteAddr() }
func (f *forwardConn) SetDeadline(t time.Time) error      { return f.s.nc.SetDeadline(t) }
func (f *forwardConn) SetReadDeadline(t time.Time) error  { return f.s.nc.SetReadDeadline(t) }
func (f *forwardConn) SetWriteDeadline(t time.Time) error { return f.s.nc.SetWriteDeadline(t) }
