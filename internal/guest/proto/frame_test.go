package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func header(t Type, flags byte, n uint32) []byte {
	h := make([]byte, HeaderSize)
	h[0], h[1] = byte(t), flags
	binary.BigEndian.PutUint32(h[4:], n)
	return h
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte("x"), MaxPayload)
	frames := []Frame{
		{TypeHello, []byte(`{"protocol":1,"version":"dev"}`)},
		{TypeEOF, nil},
		{TypeStdout, []byte("a")},
		{TypeData, big},
		{TypeStderr, bytes.Repeat([]byte("y"), smallFrame+1)},
	}
	for _, f := range frames {
		if err := w.WriteFrame(f.Type, f.Payload); err != nil {
			t.Fatalf("write %s: %v", f.Type, err)
		}
	}
	r := NewReader(&buf)
	for _, want := range frames {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("read %s: %v", want.Type, err)
		}
		if got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got %s frame of %d bytes, want %s of %d", got.Type, len(got.Payload), want.Type, len(want.Payload))
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
}

func TestWriteFrameRefusesOversizedPayload(t *testing.T) {
	var buf bytes.Buffer
	err := NewWriter(&buf).WriteFrame(TypeData, make([]byte, MaxPayload+1))
	var tl *FrameTooLargeError
	if !errors.As(err, &tl) || tl.Length != MaxPayload+1 {
		t.Fatalf("got %v, want FrameTooLargeError for %d bytes", err, MaxPayload+1)
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes written for a refused frame", buf.Len())
	}
}

func TestReadFrameErrors(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		large bool
		want  string
	}{
		{"too large", header(TypeData, 0, MaxPayload+1), true, "exceeds"},
		{"huge", header(TypeExec, 0, 0xffffffff), true, "exceeds"},
		{"unknown type", header(Type(0x7f), 0, 0), false, "unknown frame type"},
		{"zero type", header(Type(0), 0, 0), false, "unknown frame type"},
		{"flags set", header(TypeData, 1, 0), false, "reserved"},
		{"reserved set", append(header(TypeData, 0, 0)[:2], 0, 9, 0, 0, 0, 0), false, "reserved"},
		{"short header", []byte{1, 0, 0}, false, "inside a frame header"},
		{"short payload", append(header(TypeData, 0, 10), "abc"...), false, "inside a 10 byte data payload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.in))
			_, err := r.Next()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if !IsFrameError(err) {
				t.Fatalf("%v is not a frame error", err)
			}
			var tl *FrameTooLargeError
			if errors.As(err, &tl) != c.large {
				t.Fatalf("FrameTooLargeError = %v, want %v", !c.large, c.large)
			}
			if c.large && r.BufferCap() != 0 {
				t.Fatalf("reader allocated %d bytes for a refused frame", r.BufferCap())
			}
		})
	}
}

func TestDataWriterAndReader(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	payload := make([]byte, 3*ChunkSize+17)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if n, err := w.DataWriter(TypeData).Write(payload); err != nil || n != len(payload) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if err := w.WriteFrame(TypeEOF, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(TypeStdout, []byte("after")); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	got, err := io.ReadAll(NewDataReader(r, TypeData))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("data differs: got %d bytes, want %d", len(got), len(payload))
	}
	// The frame after the EOF is still there for the next reader.
	f, err := r.Next()
	if err != nil || f.Type != TypeStdout || string(f.Payload) != "after" {
		t.Fatalf("next frame: %v %v %q", err, f.Type, f.Payload)
	}
}

func TestDataReaderEnds(t *testing.T) {
	build := func(fn func(w *Writer)) *Reader {
		var buf bytes.Buffer
		fn(NewWriter(&buf))
		return NewReader(&buf)
	}
	r := build(func(w *Writer) {
		_ = w.WriteFrame(TypeData, []byte("ab"))
		_ = w.WriteError(Errorf(CodeFailed, "disk full"))
	})
	_, err := io.ReadAll(NewDataReader(r, TypeData))
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "disk full" || re.Code != CodeFailed {
		t.Fatalf("got %v, want the remote error", err)
	}

	r = build(func(w *Writer) { _ = w.WriteFrame(TypeData, []byte("ab")) })
	if _, err := io.ReadAll(NewDataReader(r, TypeData)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream ending without EOF frame: got %v", err)
	}

	r = build(func(w *Writer) { _ = w.WriteFrame(TypeStdout, []byte("ab")) })
	if _, err := io.ReadAll(NewDataReader(r, TypeData)); !IsFrameError(err) {
		t.Fatalf("wrong frame type inside data: got %v", err)
	}
}

func TestDecodeErrorKeepsUnreadablePayload(t *testing.T) {
	err := DecodeError(Frame{Type: TypeError, Payload: []byte("not json")})
	if err == nil || !strings.Contains(err.Error(), "not json") {
		t.Fatalf("got %v", err)
	}
}
