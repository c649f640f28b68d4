package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"

	"banger/internal/guest/proto"
	"banger/internal/guest/tarx"
)

// The data reader hands file contents to tarx.Extract with ReadToFile.
var _ tarx.FileSource = (*proto.DataReader)(nil)

func (s *server) copyIn(ctx context.Context, c net.Conn, pc *proto.Conn, f proto.Frame) error {
	var req proto.CopyInRequest
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	if !filepath.IsAbs(req.Dir) {
		return proto.Errorf(proto.CodeBadRequest, "copy-in destination %q is not an absolute path", req.Dir)
	}
	if err := os.MkdirAll(req.Dir, 0o755); err != nil {
		return proto.Errorf(proto.CodeFailed, "create copy-in destination: %v", err)
	}
	dr := proto.NewDataReader(pc.Reader, proto.TypeData)
	// The host may put what it likes in its own guest: the stream replaces
	// what exists and keeps owners (as root) and setuid bits. It still
	// cannot write outside req.Dir.
	err := tarx.Extract(ctx, dr, req.Dir, tarx.Options{Replace: true, Chown: os.Geteuid() == 0, KeepSetid: true})
	if err == nil {
		// The tar reader stops at the end-of-archive marker; read on to the
		// host's end-of-data frame.
		_, err = io.Copy(io.Discard, dr)
	}
	if err != nil {
		if proto.IsFrameError(err) {
			return err
		}
		var esc *tarx.EscapeError
		if errors.As(err, &esc) {
			return proto.Errorf(proto.CodeBadRequest, "copy into %s: %v", req.Dir, err)
		}
		return proto.Errorf(proto.CodeFailed, "copy into %s: %v", req.Dir, err)
	}
	return pc.WriteJSON(proto.TypeOK, struct{}{})
}

func (s *server) copyOut(ctx context.Context, c net.Conn, pc *proto.Conn, f proto.Frame) error {
	var req proto.CopyOutRequest
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	if !filepath.IsAbs(req.Path) {
		return proto.Errorf(proto.CodeBadRequest, "copy-out source %q is not an absolute path", req.Path)
	}
	stop := watchHangup(c, pc.Reader)
	defer stop()
	// Pack buffers what it writes into whole frames; large files go
	// through the data writer's WriteFile.
	err := tarx.Pack(ctx, pc.DataWriter(proto.TypeData), req.Path)
	if err != nil {
		s.opts.Logf("agent: copy-out: %v", err)
		_ = pc.WriteError(proto.Errorf(proto.CodeFailed, "copy out of %s: %v", req.Path, err))
		return nil
	}
	_ = pc.WriteFrame(proto.TypeEOF, nil)
	return nil
}
