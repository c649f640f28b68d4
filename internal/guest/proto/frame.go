package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// HeaderSize is the size of a frame header in bytes:
//
//	byte 0     type
//	byte 1     flags (none defined; must be 0)
//	bytes 2-3  reserved (must be 0)
//	bytes 4-7  payload length, big endian
const HeaderSize = 8

// MaxPayload is the largest payload a frame may carry. A header announcing
// more is refused before any payload is read or allocated.
const MaxPayload = 1 << 20

// ChunkSize is the payload size used when a byte stream is cut into data
// frames. It is below MaxPayload so a frame always fits.
const ChunkSize = 256 << 10

// Type says what a frame carries.
type Type uint8

// Frame types. Control frames carry JSON; data frames carry raw bytes; the
// rest carry nothing.
const (
	TypeHello Type = 0x01 // JSON Hello; first frame in each direction
	TypeError Type = 0x02 // JSON RemoteError; the stream ends after it
	TypeOK    Type = 0x03 // JSON result of a request (may be {})

	TypeExec     Type = 0x10 // JSON ExecRequest
	TypeCopyIn   Type = 0x11 // JSON CopyInRequest, then tar data
	TypeCopyOut  Type = 0x12 // JSON CopyOutRequest
	TypeForward  Type = 0x13 // JSON ForwardRequest
	TypeShutdown Type = 0x14 // no payload
	TypeReboot   Type = 0x15 // no payload
	TypeSyncTime Type = 0x16 // JSON SyncTimeRequest
	TypeHealth   Type = 0x17 // no payload
	TypeResumed  Type = 0x18 // JSON ResumedRequest; answered with a JSON ResumedResult

	TypeStdin  Type = 0x20 // raw bytes for the command's stdin
	TypeStdout Type = 0x21 // raw bytes from the command's stdout
	TypeStderr Type = 0x22 // raw bytes from the command's stderr
	TypeData   Type = 0x23 // raw bytes of a tar stream or a forwarded connection
	TypeEOF    Type = 0x24 // end of stdin or of a data direction; no payload

	TypeResize Type = 0x30 // JSON Resize
	TypeSignal Type = 0x31 // JSON Signal
	TypeExit   Type = 0x32 // JSON Exit; last frame of an exec
)

var typeNames = map[Type]string{
	TypeHello: "hello", TypeError: "error", TypeOK: "ok",
	TypeExec: "exec", TypeCopyIn: "copy-in", TypeCopyOut: "copy-out",
	TypeForward: "forward", TypeShutdown: "shutdown", TypeReboot: "reboot",
	TypeSyncTime: "sync-time", TypeHealth: "health", TypeResumed: "resumed",
	TypeStdin: "stdin", TypeStdout: "stdout", TypeStderr: "stderr",
	TypeData: "data", TypeEOF: "eof",
	TypeResize: "resize", TypeSignal: "signal", TypeExit: "exit",
}

// Known reports whether t is a frame type of this protocol version.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type-0x%02x", uint8(t))
}

// Frame is one decoded frame. Payload is only valid until the next call to
// Reader.Next.
type Frame struct {
	Type    Type
	Payload []byte
}

// FrameTooLargeError is returned when a header announces a payload above
// the limit. The stream cannot be resynchronised after it.
type FrameTooLargeError struct {
	Type   Type
	Length uint32
	Limit  uint32
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("%s frame of %d bytes exceeds the %d byte limit", e.Type, e.Length, e.Limit)
}

// MalformedFrameError is returned for a frame that cannot be decoded: an
// unknown type, non-zero reserved bits, a truncated frame or a payload that
// does not parse.
type MalformedFrameError struct {
	Reason string
}

func (e *MalformedFrameError) Error() string { return "malformed frame: " + e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedFrameError{Reason: fmt.Sprintf(format, args...)}
}

// IsFrameError reports whether err means the peer sent bytes that are not a
// valid frame (as opposed to the stream simply ending or failing).
func IsFrameError(err error) bool {
	var tl *FrameTooLargeError
	var mf *MalformedFrameError
	return errors.As(err, &tl) || errors.As(err, &mf)
}

// Reader decodes frames from a byte stream. It is not safe for concurrent use.
type Reader struct {
	r   io.Reader
	hdr [HeaderSize]byte
	buf []byte
	// A DataReader reads data payloads piece by piece: cur and size are the
	// type and length of the frame it is in, left the part of its payload
	// not yet read from r.
	cur  Type
	size uint32
	left uint32
	// err, once set, ends the stream: a DataReader lost its place in it.
	err error
}

// NewReader returns a Reader that decodes frames from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads one frame. It returns io.EOF when the stream ends cleanly
// between frames, *FrameTooLargeError or *MalformedFrameError for bad input,
// and other errors from the underlying reader as they are. The returned
// payload is overwritten by the next call. Whatever a DataReader left unread
// of the frame it was in is skipped first.
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	if r.left > 0 {
		if _, err := io.CopyN(io.Discard, r.r, int64(r.left)); err != nil {
			return Frame{}, r.payloadErr(err)
		}
		r.left = 0
	}
	t, n, err := r.header()
	if err != nil {
		return Frame{}, err
	}
	p, err := r.payload(t, n)
	if err != nil {
		return Frame{}, err
	}
	return Frame{Type: t, Payload: p}, nil
}

// header reads and checks one frame header.
func (r *Reader) header() (Type, uint32, error) {
	if r.err != nil {
		return 0, 0, r.err
	}
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, malformed("stream ended inside a frame header")
		}
		return 0, 0, err
	}
	t := Type(r.hdr[0])
	n := binary.BigEndian.Uint32(r.hdr[4:])
	if !t.Known() {
		return 0, 0, malformed("unknown frame type 0x%02x", uint8(t))
	}
	if r.hdr[1] != 0 || r.hdr[2] != 0 || r.hdr[3] != 0 {
		return 0, 0, malformed("%s frame has reserved header bits set (% x)", t, r.hdr[1:4])
	}
	if n > MaxPayload {
		return 0, 0, &FrameTooLargeError{Type: t, Length: n, Limit: MaxPayload}
	}
	r.cur, r.size = t, n
	return t, n, nil
}

// payload reads the n-byte payload of the frame whose header was just read,
// whole, into the reader's buffer.
func (r *Reader) payload(t Type, n uint32) ([]byte, error) {
	if uint32(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		return nil, r.payloadErr(err)
	}
	return p, nil
}

// readPart reads at most len(p) bytes, and at least one, of what is left of
// the current frame's payload (r.left > 0).
func (r *Reader) readPart(p []byte) (int, error) {
	p = p[:min(uint32(len(p)), r.left)]
	for {
		n, err := r.r.Read(p)
		r.left -= uint32(n)
		if n > 0 {
			return n, nil
		}
		if err != nil {
			return 0, r.payloadErr(err)
		}
	}
}

// payloadErr turns the stream ending inside a payload into a frame error.
func (r *Reader) payloadErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return malformed("stream ended inside a %d byte %s payload", r.size, r.cur)
	}
	return err
}

// BufferCap returns the capacity of the reader's payload buffer. Tests use it
// to check that decoding never allocates beyond MaxPayload.
func (r *Reader) BufferCap() int { return cap(r.buf) }

// Writer encodes frames onto a byte stream. It is safe for concurrent use;
// each frame is written whole before another starts.
type Writer struct {
	mu         sync.Mutex
	w          io.Writer
	scratch    []byte
	fbuf       []byte // WriteFile's buffer, allocated on first use
	noSendfile bool   // sendfile(2) failed as unsupported on this stream
}

// NewWriter returns a Writer that encodes frames onto w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// smallFrame is the payload size up to which header and payload are copied
// into one buffer and written with a single Write.
const smallFrame = 4 << 10

// WriteFrame writes one frame. A payload above MaxPayload is refused with
// *FrameTooLargeError and nothing is written.
func (w *Writer) WriteFrame(t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return &FrameTooLargeError{Type: t, Length: uint32(min(len(payload), 1<<32-1)), Limit: MaxPayload}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeFrameLocked(t, payload)
}

// writeFrameLocked writes one frame of at most MaxPayload bytes; w.mu is
// held.
func (w *Writer) writeFrameLocked(t Type, payload []byte) error {
	var hdr [HeaderSize]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(payload)))
	if len(payload) <= smallFrame {
		w.scratch = append(append(w.scratch[:0], hdr[:]...), payload...)
		_, err := w.w.Write(w.scratch)
		return err
	}
	// Header and payload in one writev where the stream supports it.
	bufs := net.Buffers{hdr[:], payload}
	_, err := bufs.WriteTo(w.w)
	return err
}

// WriteJSON writes a frame whose payload is v encoded as JSON.
func (w *Writer) WriteJSON(t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", t, err)
	}
	return w.WriteFrame(t, b)
}

// WriteError writes an error frame.
func (w *Writer) WriteError(e *RemoteError) error { return w.WriteJSON(TypeError, e) }

// Conn pairs a Reader and a Writer over one stream.
type Conn struct {
	*Reader
	*Writer
}

// NewConn returns a Conn over rw.
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{Reader: NewReader(rw), Writer: NewWriter(rw)}
}

// DecodeJSON decodes a control frame's payload into v. A payload that does
// not parse is reported as *MalformedFrameError.
func DecodeJSON(f Frame, v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return malformed("%s payload is not valid JSON: %v", f.Type, err)
	}
	return nil
}

// DataWriter returns an io.Writer that cuts what it is given into frames of
// type t, at most ChunkSize bytes each.
func (w *Writer) DataWriter(t Type) io.Writer { return dataWriter{w: w, t: t} }

type dataWriter struct {
	w *Writer
	t Type
}

func (d dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), ChunkSize)
		if err := d.w.WriteFrame(d.t, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// DataReader reads the payloads of consecutive frames of type t as one byte
// stream. A TypeEOF frame ends it with io.EOF; a TypeError frame ends it with
// the *RemoteError; any other frame type is a *MalformedFrameError. The
// stream ending without a TypeEOF frame is io.ErrUnexpectedEOF.
//
// Payloads are not copied whole into a buffer first: a large Read is served
// straight from the underlying stream, small ones through a buffer of
// ChunkSize bytes, and ReadToFile moves payload bytes into a file (with
// splice(2) where the stream is a socket).
type DataReader struct {
	r    *Reader
	t    Type
	buf  []byte // allocated on first use
	rest []byte // part of buf not yet returned
	err  error
}

// NewDataReader returns a DataReader over r for frames of type t.
func NewDataReader(r *Reader, t Type) *DataReader { return &DataReader{r: r, t: t} }

// more makes sure the current frame has payload bytes left to read, moving
// on to the next frame as needed. It returns the error that ends the stream.
func (d *DataReader) more() error {
	if d.r.err != nil {
		return d.r.err
	}
	for d.r.left == 0 {
		if d.err != nil {
			return d.err
		}
		t, n, err := d.r.header()
		switch {
		case errors.Is(err, io.EOF):
			d.err = io.ErrUnexpectedEOF
		case err != nil:
			d.err = err
		case t == d.t:
			d.r.left = n
		default:
			p, err := d.r.payload(t, n)
			switch {
			case err != nil:
				d.err = err
			case t == TypeEOF:
				d.err = io.EOF
			case t == TypeError:
				d.err = DecodeError(Frame{Type: t, Payload: p})
			default:
				d.err = malformed("unexpected %s frame inside a %s stream", t, d.t)
			}
		}
	}
	return nil
}

func (d *DataReader) Read(p []byte) (int, error) {
	if len(d.rest) > 0 {
		n := copy(p, d.rest)
		d.rest = d.rest[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := d.more(); err != nil {
		return 0, err
	}
	if len(p) >= ChunkSize {
		return d.r.readPart(p)
	}
	if err := d.fill(); err != nil {
		return 0, err
	}
	n := copy(p, d.rest)
	d.rest = d.rest[n:]
	return n, nil
}

// fill reads what the stream has of the current payload, up to ChunkSize
// bytes, into the buffer. The buffer is empty and the payload not.
func (d *DataReader) fill() error {
	if d.buf == nil {
		d.buf = make([]byte, ChunkSize)
	}
	n, err := d.r.readPart(d.buf)
	d.rest = d.buf[:n]
	return err
}
