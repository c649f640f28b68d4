package proto

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The contents of regular files travel inside tar streams (copy-in and
// copy-out). The two methods here let those bytes skip this process's
// buffers where the stream is a socket: WriteFile sends file data with
// sendfile(2) and DataReader.ReadToFile receives it with splice(2). The bytes
// on the wire are ordinary data frames either way.

// FileReadError reports that WriteFile could not read its file: it ended
// early or failed. The stream is still usable: the frame that was being sent
// was completed with zero bytes. The caller should end the stream with an
// error frame, so that the receiver does not keep the zeros.
type FileReadError struct {
	Err error
}

func (e *FileReadError) Error() string { return "read the file: " + e.Err.Error() }
func (e *FileReadError) Unwrap() error { return e.Err }

// sendfileConn returns the stream's raw connection when it is a socket
// (a Unix or TCP connection, or another socket type with a descriptor, such
// as vsock) that sendfile(2) can write to. A socket that refuses is found
// out on the first call, and the writer then uses its buffer.
func sendfileConn(w io.Writer) syscall.RawConn {
	if _, isFile := w.(*os.File); isFile {
		return nil // pipes and ttys: leave them to the buffer
	}
	sc, ok := w.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// WriteFile sends the next n bytes of f, from its current offset, as frames
// of type t of at most ChunkSize bytes. Where the stream is a socket (Unix,
// TCP, vsock) the bytes go from the file to the socket with sendfile(2);
// otherwise they pass through a buffer. If f cannot be read, or has fewer
// than n bytes (the error then wraps io.ErrUnexpectedEOF), the error is a
// *FileReadError and the stream is left whole; any other error is the
// stream's.
func (w *Writer) WriteFile(t Type, f *os.File, n int64) (int64, error) {
	var sent int64
	for sent < n {
		c := int(min(n-sent, ChunkSize))
		err := w.writeFileFrame(t, f, c)
		if err != nil {
			return sent, err
		}
		sent += int64(c)
	}
	return sent, nil
}

// writeFileFrame sends one frame whose payload is the next c bytes of f.
func (w *Writer) writeFileFrame(t Type, f *os.File, c int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	rc := sendfileConn(w.w)
	if rc == nil {
		p := w.buf(c)
		rerr := readFull(f, p)
		if err := w.writeFrameLocked(t, p); err != nil {
			return err
		}
		return rerr
	}
	var hdr [HeaderSize]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[4:], uint32(c))
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	m := 0
	if !w.noSendfile {
		var err error
		m, err = sendfile(rc, f, c)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			w.noSendfile = true // this pair of descriptors cannot; stop trying
		}
	}
	if m == c {
		return nil
	}
	// sendfile stopped short (end of file, an error, or not supported).
	// Finish the frame through a buffer, which also tells a failing file
	// from a failing stream.
	p := w.buf(c - m)
	rerr := readFull(f, p)
	if _, err := w.w.Write(p); err != nil {
		return err
	}
	return rerr
}

// buf returns n bytes of the writer's file buffer, made on first use (a
// writer that only ever uses sendfile needs none).
func (w *Writer) buf(n int) []byte {
	if w.fbuf == nil {
		w.fbuf = make([]byte, ChunkSize)
	}
	return w.fbuf[:n]
}

// readFull fills p from f. If f ends or fails first, the rest of p is zeroed
// and the error is a *FileReadError.
func readFull(f *os.File, p []byte) error {
	n, err := io.ReadFull(f, p)
	if err == nil {
		return nil
	}
	clear(p[n:])
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return &FileReadError{Err: err}
}

// sendfile moves up to c bytes from f's offset to the socket rc with
// sendfile(2), advancing f's offset. It stops early at the end of f or on an
// error.
func sendfile(rc syscall.RawConn, f *os.File, c int) (int, error) {
	frc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	sent := 0
	var serr error
	cerr := frc.Control(func(in uintptr) {
		werr := rc.Write(func(out uintptr) bool {
			for sent < c {
				n, err := unix.Sendfile(int(out), int(in), nil, c-sent)
				if n > 0 {
					sent += n
				}
				switch {
				case errors.Is(err, unix.EAGAIN):
					return false // wait until the socket can take more
				case errors.Is(err, unix.EINTR):
				case err != nil:
					serr = err
					return true
				case n == 0:
					return true // end of file
				}
			}
			return true
		})
		if serr == nil {
			serr = werr
		}
	})
	if serr == nil {
		serr = cerr
	}
	return sent, serr
}

// WriteFile sends the next n bytes of f as frames of the writer's type, as
// Writer.WriteFile does. It makes a DataWriter a tarx.FileWriter.
func (d dataWriter) WriteFile(f *os.File, n int64) (int64, error) {
	return d.w.WriteFile(d.t, f, n)
}

// spliceMin is the smallest part of a payload that ReadToFile splices;
// smaller parts go through the buffer, with whatever follows them.
const spliceMin = 64 << 10

// ReadToFile moves at most n bytes of the stream, and at least one, into f
// at its current offset, as if they were read with Read and written to f. It
// returns how many bytes it moved, and io.EOF or the error that ends the
// stream as Read does. Where the stream is a Unix or TCP socket, payload
// bytes not yet read go from the socket to the file with splice(2); a
// failure there leaves the stream unusable, as it may have lost bytes.
func (d *DataReader) ReadToFile(f *os.File, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	if len(d.rest) == 0 {
		if err := d.more(); err != nil {
			return 0, err
		}
		k := min(uint32(n), d.r.left)
		if k < spliceMin || !spliceable(d.r.r) {
			if err := d.fill(); err != nil {
				return 0, err
			}
		} else {
			m, err := f.ReadFrom(io.LimitReader(d.r.r, int64(k)))
			d.r.left -= uint32(m)
			if err != nil {
				d.r.err = err // bytes may be lost between socket and file
				return int(m), err
			}
			if m < int64(k) {
				return int(m), d.r.payloadErr(io.EOF)
			}
			return int(m), nil
		}
	}
	k := min(n, len(d.rest))
	m, err := f.Write(d.rest[:k])
	d.rest = d.rest[m:]
	return m, err
}

// spliceable reports whether os.File.ReadFrom splices from r.
func spliceable(r io.Reader) bool {
	switch r.(type) {
	case *net.UnixConn, *net.TCPConn:
		return true
	}
	return false
}
