package client

import (
	"bufio"
	"context"
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
	err := c.copyIn(ctx, dstDir, func(w io.Writer) error { _, err := io.Copy(w, r); return err })
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
	w := &trackingWriter{w: s.DataWriter(proto.TypeData)}
	// Whole chunks per frame: tar writes 512-byte headers and 32 KiB
	// blocks, which would otherwise each cost a frame and a syscall.
	bw := bufio.NewWriterSize(w, proto.ChunkSize)
	perr := produce(bw)
	if perr == nil {
		perr = bw.Flush()
	}
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

// trackingWriter remembers whether a write to the stream failed.
type trackingWriter struct {
	w   io.Writer
	err error
}

func (t *trackingWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
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
