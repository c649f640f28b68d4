package proto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testutil"
)

// pattern returns n bytes that differ from one position to the next, so a
// misplaced or repeated piece shows.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i/251)
	}
	return p
}

func writeTemp(t *testing.T, data []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// unixPair returns the two ends of a connected Unix stream socket, which is
// where WriteFile uses sendfile(2) and ReadToFile splice(2).
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	if len(path) > 100 {
		path = filepath.Join(testutil.ShortDir(t, "bgp"), "s")
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		c, _ := ln.AcceptUnix()
		accepted <- c
	}()
	a, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// send runs fn against a Writer on one end of a stream and returns every
// byte that came out of the other end. kind "socket" is a Unix socket,
// "buffer" a plain io.Writer.
func send(t *testing.T, kind string, fn func(w *Writer)) []byte {
	t.Helper()
	if kind == "buffer" {
		var buf bytes.Buffer
		fn(NewWriter(&buf))
		return buf.Bytes()
	}
	a, b := unixPair(t)
	got := make(chan []byte, 1)
	go func() {
		p, _ := io.ReadAll(b)
		got <- p
	}()
	fn(NewWriter(a))
	a.CloseWrite()
	return <-got
}

func TestWriteFile(t *testing.T) {
	sizes := []int{0, 1, 4095, ChunkSize - 1, ChunkSize, 3*ChunkSize + 17}
	for _, kind := range []string{"socket", "buffer"} {
		for _, size := range sizes {
			data := pattern(size + 100)
			f := writeTemp(t, data)
			// Start part-way in: WriteFile sends from the current offset.
			if _, err := f.Seek(100, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			stream := send(t, kind, func(w *Writer) {
				n, err := w.WriteFile(TypeData, f, int64(size))
				if err != nil || n != int64(size) {
					t.Errorf("%s %d: WriteFile = %d, %v", kind, size, n, err)
				}
				if err := w.WriteFrame(TypeEOF, nil); err != nil {
					t.Error(err)
				}
			})
			if off, _ := f.Seek(0, io.SeekCurrent); off != int64(100+size) {
				t.Errorf("%s %d: file offset %d after WriteFile, want %d", kind, size, off, 100+size)
			}
			r := NewReader(bytes.NewReader(stream))
			var got []byte
			for {
				fr, err := r.Next()
				if err != nil {
					t.Fatalf("%s %d: %v", kind, size, err)
				}
				if fr.Type == TypeEOF {
					break
				}
				if fr.Type != TypeData || len(fr.Payload) > ChunkSize || len(fr.Payload) == 0 {
					t.Fatalf("%s %d: got a %s frame of %d bytes", kind, size, fr.Type, len(fr.Payload))
				}
				got = append(got, fr.Payload...)
			}
			if !bytes.Equal(got, data[100:]) {
				t.Errorf("%s %d: payload of %d bytes differs from the file's", kind, size, len(got))
			}
		}
	}
}

func TestWriteFileShortFileKeepsStreamWhole(t *testing.T) {
	for _, kind := range []string{"socket", "buffer"} {
		data := pattern(ChunkSize + 1000)
		f := writeTemp(t, data)
		want := int64(2 * ChunkSize)
		stream := send(t, kind, func(w *Writer) {
			n, err := w.WriteFile(TypeData, f, want)
			var fe *FileReadError
			if !errors.As(err, &fe) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: got %v, want a FileReadError for a short file", kind, err)
			}
			if n != ChunkSize {
				t.Errorf("%s: %d bytes reported sent, want the %d of the whole frame", kind, n, ChunkSize)
			}
			// The stream is still usable: an error frame follows.
			if err := w.WriteError(Errorf(CodeFailed, "source shrank")); err != nil {
				t.Error(err)
			}
		})
		got, err := io.ReadAll(NewDataReader(NewReader(bytes.NewReader(stream)), TypeData))
		var re *RemoteError
		if !errors.As(err, &re) || re.Message != "source shrank" {
			t.Fatalf("%s: stream ended with %v, want the error frame", kind, err)
		}
		// Whole frames: the file's bytes, then zeros to the end of the frame.
		wantBytes := append(append([]byte{}, data...), make([]byte, 2*ChunkSize-len(data))...)
		if !bytes.Equal(got, wantBytes) {
			t.Fatalf("%s: got %d bytes, want the file's %d then zeros to %d", kind, len(got), len(data), len(wantBytes))
		}
	}
}

// dataStream writes payload as data frames cut at the given sizes (the last
// one repeated), then an EOF frame.
func dataStream(t *testing.T, w *Writer, payload []byte, cuts ...int) {
	t.Helper()
	for i := 0; len(payload) > 0; i++ {
		n := min(cuts[min(i, len(cuts)-1)], len(payload))
		if err := w.WriteFrame(TypeData, payload[:n]); err != nil {
			t.Error(err)
			return
		}
		payload = payload[n:]
	}
	if err := w.WriteFrame(TypeEOF, nil); err != nil {
		t.Error(err)
	}
}

func TestReadToFile(t *testing.T) {
	payload := pattern(5*ChunkSize + 333)
	// Reads of these sizes, in turn: small ones go through the buffer,
	// large ones are spliced; "r" reads with Read, "f" moves to the file.
	steps := []struct {
		how string
		n   int
	}{{"r", 512}, {"f", 100}, {"f", 3 * ChunkSize}, {"r", 7}, {"f", spliceMin}, {"r", ChunkSize}, {"f", 1 << 30}}
	for _, kind := range []string{"socket", "buffer"} {
		var src io.Reader
		if kind == "socket" {
			a, b := unixPair(t)
			go func() {
				// Frames not aligned with the reads: a small one, then whole
				// chunks, and an empty one in the middle.
				w := NewWriter(a)
				if err := w.WriteFrame(TypeData, nil); err != nil {
					t.Error(err)
				}
				dataStream(t, w, payload, 1000, ChunkSize)
				a.CloseWrite()
			}()
			src = b
		} else {
			var buf bytes.Buffer
			dataStream(t, NewWriter(&buf), payload, 1000, ChunkSize)
			src = &buf
		}
		dr := NewDataReader(NewReader(src), TypeData)
		f, err := os.Create(filepath.Join(t.TempDir(), "dst"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var got, fromFile []byte
		off := 0
		for i := 0; ; i++ {
			st := steps[i%len(steps)]
			var n int
			var err error
			if st.how == "r" {
				p := make([]byte, st.n)
				n, err = dr.Read(p)
				got = append(got, p[:n]...)
			} else {
				n, err = dr.ReadToFile(f, st.n)
				if n > st.n {
					t.Fatalf("%s: ReadToFile moved %d bytes, asked for at most %d", kind, n, st.n)
				}
				p := make([]byte, n)
				if _, rerr := f.ReadAt(p, int64(off)); rerr != nil {
					t.Fatal(rerr)
				}
				got = append(got, p...)
				fromFile = append(fromFile, p...)
			}
			off += n
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: step %d: %v", kind, i, err)
			}
			if n == 0 {
				t.Fatalf("%s: step %d moved nothing and returned no error", kind, i)
			}
			if st.how == "r" {
				// Keep the file's offset in step with the stream.
				if _, err := f.Write(got[len(got)-n:]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("%s: got %d bytes, want %d, or they differ", kind, len(got), len(payload))
		}
		if len(fromFile) < 3*ChunkSize {
			t.Fatalf("%s: only %d bytes went through ReadToFile", kind, len(fromFile))
		}
	}
}

func TestReadToFileStreamEnds(t *testing.T) {
	for _, kind := range []string{"socket", "buffer"} {
		cases := []struct {
			name  string
			write func(w *Writer, raw io.Writer)
			check func(err error) bool
		}{
			{"inside a payload", func(w *Writer, raw io.Writer) {
				hdr := header(TypeData, 0, ChunkSize)
				raw.Write(hdr)
				raw.Write(pattern(ChunkSize / 2))
			}, func(err error) bool { return IsFrameError(err) && strings.Contains(err.Error(), "stream ended inside") }},
			{"without an eof frame", func(w *Writer, raw io.Writer) {
				w.WriteFrame(TypeData, pattern(ChunkSize))
			}, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
			{"with an error frame", func(w *Writer, raw io.Writer) {
				w.WriteFrame(TypeData, pattern(ChunkSize))
				w.WriteError(Errorf(CodeFailed, "gone"))
			}, func(err error) bool { var re *RemoteError; return errors.As(err, &re) && re.Message == "gone" }},
			{"with a stray frame", func(w *Writer, raw io.Writer) {
				w.WriteFrame(TypeData, pattern(ChunkSize))
				w.WriteFrame(TypeStdout, []byte("x"))
			}, IsFrameError},
		}
		for _, c := range cases {
			var src io.Reader
			if kind == "socket" {
				a, b := unixPair(t)
				go func() {
					c.write(NewWriter(a), a)
					a.CloseWrite()
				}()
				src = b
			} else {
				var buf bytes.Buffer
				c.write(NewWriter(&buf), &buf)
				src = &buf
			}
			f, err := os.Create(filepath.Join(t.TempDir(), "dst"))
			if err != nil {
				t.Fatal(err)
			}
			dr := NewDataReader(NewReader(src), TypeData)
			for err == nil {
				_, err = dr.ReadToFile(f, 1<<30)
			}
			f.Close()
			if !c.check(err) {
				t.Errorf("%s, %s: stream ended with %v", kind, c.name, err)
			}
		}
	}
}

func TestNextSkipsWhatADataReaderLeft(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.WriteFrame(TypeData, pattern(MaxPayload))
	_ = w.WriteFrame(TypeStdout, []byte("after"))
	r := NewReader(&buf)
	p := make([]byte, ChunkSize)
	// A large read goes straight to the stream and stops mid-frame.
	if _, err := io.ReadFull(NewDataReader(r, TypeData), p); err != nil {
		t.Fatal(err)
	}
	f, err := r.Next()
	if err != nil || f.Type != TypeStdout || string(f.Payload) != "after" {
		t.Fatalf("next frame: %v %v %q", err, f.Type, f.Payload)
	}
}
