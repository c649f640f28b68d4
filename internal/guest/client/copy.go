package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"banger/internal/guest/proto"
	"banger/internal/guest/tarx"
)

// CopyIn copies the host file or directory src into the guest directory
// dstDir (absolute, created when missing), as dstDir/<base name of src>.
// Modes, symlinks, empty directories and (when the agent runs as root)
// ownership are kept.
func (c *Client) CopyIn(ctx context.Context, src, dstDir string) error {
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("copy %s into the guest: %w", src, err)
	}
	err := c.copyIn(ctx, dstDir, func(w io.Writer) error { return tarx.Pack(ctx, w, src) })
	if err != nil {
		return fmt.Errorf("copy %s into guest %s: %w", src, dstDir, err)
	}
	return nil
}

// CopyInTar unpacks the tar stream r into the guest directory dstDir.
func (c *Client) CopyInTar(ctx context.Context, r io.Reader, dstDir string) error {
	err := c.copyIn(ctx, dstDir, func(w io.Writer) error {
		// Whole chunks per frame: tar writers make 512-byte headers and
		// 32 KiB blocks, which would otherwise each cost a frame and a
		// syscall.
		bw := bufio.NewWriterSize(w, proto.ChunkSize)
		if _, err := io.Copy(bw, r); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("unpack tar stream into guest %s: %w", dstDir, err)
	}
	return nil
}

func (c *Client) copyIn(ctx context.Context, dstDir string, produce func(io.Writer) error) error {
	s, err := c.start(ctx, proto.TypeCopyIn, proto.CopyInRequest{Dir: dstDir})
	if err != nil {
		return err
	}
	defer s.close()
	// The agent may refuse part way through; its answer is read while we
	// send, and a refusal closes the stream so that sending stops.
	answer := make(chan error, 1)
	go func() {
		err := s.result(nil)
		if err != nil {
			s.nc.Close()
		}
		answer <- err
	}()
	w := &trackingWriter{w: s.Writer, dw: s.DataWriter(proto.TypeData)}
	perr := produce(w)
	if perr == nil {
		perr = s.WriteFrame(proto.TypeEOF, nil)
	} else if w.err == nil {
		// The source failed, not the stream: tell the agent, so it stops
		// and answers, and report the source's error.
		_ = s.WriteError(proto.Errorf(proto.CodeFailed, "host could not read the source: %v", perr))
		<-answer
		return perr
	}
	aerr := <-answer
	if aerr != nil {
		return aerr // the agent's account of why sending failed
	}
	if perr != nil {
		return s.cause(perr)
	}
	return nil
}

var _ tarx.FileWriter = (*trackingWriter)(nil)

// trackingWriter writes data frames and remembers whether a write to the
// stream failed. It is a tarx.FileWriter, so tarx.Pack hands it large files
// to send with sendfile(2).
type trackingWriter struct {
	w   *proto.Writer
	dw  io.Writer // w's data writer
	err error
}

func (t *trackingWriter) Write(p []byte) (int, error) {
	n, err := t.dw.Write(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

func (t *trackingWriter) WriteFile(f *os.File, n int64) (int64, error) {
	m, err := t.w.WriteFile(proto.TypeData, f, n)
	var fe *proto.FileReadError
	if err != nil && !errors.As(err, &fe) && t.err == nil {
		t.err = err // the stream failed, not the file
	}
	return m, err
}

// CopyOut copies the guest path src (file, symlink or directory tree) into
// the host directory dstDir (created when missing), as dstDir/<base name of
// src>. Ownership is kept when this process runs as root.
func (c *Client) CopyOut(ctx context.Context, src, dstDir string) error {
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return fmt.Errorf("copy %s out of the guest: %w", src, err)
	}
	err := c.copyOut(ctx, src, func(r io.Reader) error {
		return tarx.Extract(ctx, r, dstDir, tarx.Options{Chown: os.Geteuid() == 0})
	})
	if err != nil {
		return fmt.Errorf("copy guest %s into %s: %w", src, dstDir, err)
	}
	return nil
}

// CopyOutTar writes a tar stream of the guest path src to w.
func (c *Client) CopyOutTar(ctx context.Context, src string, w io.Writer) error {
	err := c.copyOut(ctx, src, func(r io.Reader) error { _, err := io.Copy(w, r); return err })
	if err != nil {
		return fmt.Errorf("tar guest %s: %w", src, err)
	}
	return nil
}

func (c *Client) copyOut(ctx context.Context, src string, consume func(io.Reader) error) error {
	s, err := c.start(ctx, proto.TypeCopyOut, proto.CopyOutRequest{Path: src})
	if err != nil {
		return err
	}
	defer s.close()
	dr := proto.NewDataReader(s.Reader, proto.TypeData)
	err = consume(dr)
	if err == nil {
		// Read on to the end-of-data frame, past the tar trailer.
		_, err = io.Copy(io.Discard, dr)
	}
	if err != nil {
		return s.cause(err)
	}
	return nil
}
