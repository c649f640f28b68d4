package client

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

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

// CopyOutOptions say how CopyOut treats what the guest sends. The zero
// value is the strict one.
type CopyOutOptions struct {
	// Overwrite lets the copy replace existing files and symlinks under
	// dstDir/<base> (each atomically; a symlink is replaced, never
	// followed) and merge into an existing directory there. Without it,
	// dstDir/<base> must not exist.
	Overwrite bool
	// Preserve keeps the guest's permission bits, setuid and setgid
	// included, and, when this process runs as root, the guest's owners.
	// Without it, setuid and setgid bits are dropped, the process's umask
	// applies and files belong to whoever runs the copy.
	Preserve bool
	// Skipped, when set, is told about each device, FIFO or socket entry
	// the guest sends; such entries are never created on the host. When
	// nil, they fail the copy.
	Skipped func(name, what string)
	// MaxEntries bounds the entries the guest may send; 0 means
	// DefaultMaxEntries.
	MaxEntries int
}

// DefaultMaxEntries bounds the entries of a copy out of a guest.
const DefaultMaxEntries = 4 << 20

// CopyOut copies the guest path src (file, symlink or directory tree) into
// the host directory dstDir (created when missing), as dstDir/<base name of
// src>. The guest is not trusted: every entry it sends must lie under
// dstDir/<base>, no symlink is followed, nothing existing is replaced
// unless opts.Overwrite, and when the copy fails, what it made is removed
// (with opts.Overwrite, files it replaced stay replaced, each whole).
func (c *Client) CopyOut(ctx context.Context, src, dstDir string, opts CopyOutOptions) error {
	base := path.Base(path.Clean(src))
	if !path.IsAbs(src) || base == "/" || base == "." || base == ".." {
		return fmt.Errorf("copy %s out of the guest: name an absolute path below /, such as /root/file", src)
	}
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return fmt.Errorf("copy %s out of the guest: %w", src, err)
	}
	xo := tarx.Options{
		Top:        base,
		Replace:    opts.Overwrite,
		Chown:      opts.Preserve && os.Geteuid() == 0,
		KeepSetid:  opts.Preserve,
		Skip:       opts.Skipped,
		MaxEntries: cmp.Or(opts.MaxEntries, DefaultMaxEntries),
		MaxTrailer: maxTrailer,
	}
	if !opts.Preserve {
		xo.Umask = processUmask()
	}
	err := c.copyOut(ctx, src, func(r io.Reader) error {
		return tarx.Extract(ctx, r, dstDir, xo)
	})
	if err != nil {
		var esc *tarx.EscapeError
		if errors.As(err, &esc) {
			return fmt.Errorf("copy guest %s into %s: %w (the guest's answer does not match the copy asked for; nothing of it was kept)", src, dstDir, err)
		}
		return fmt.Errorf("copy guest %s into %s: %w", src, dstDir, err)
	}
	return nil
}

// processUmask reads this process's umask from /proc (changing it to read
// it would race with other goroutines creating files). Without /proc it
// assumes the usual 022.
func processUmask() fs.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return fs.FileMode(m) & fs.ModePerm
				}
			}
		}
	}
	return 0o022
}

// CopyOutTar writes a tar stream of the guest path src to w.
func (c *Client) CopyOutTar(ctx context.Context, src string, w io.Writer) error {
	err := c.copyOut(ctx, src, func(r io.Reader) error { _, err := io.Copy(w, r); return err })
	if err != nil {
		return fmt.Errorf("tar guest %s: %w", src, err)
	}
	return nil
}

// maxTrailer bounds what CopyOut takes after the tar stream's end: tar
// writers pad to a record (10 KiB for most); anything much longer is not
// a tar stream's end.
const maxTrailer = 1 << 20

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
