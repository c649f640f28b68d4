package kernelprep

import (
	"bufio"
	"io"
	"os"
)

// sink is where a decoded kernel goes: memory (ExtractVmlinux) or a file
// (WriteVmlinuxFile). A candidate payload that fails is thrown away with
// reset before the next one is tried.
type sink interface {
	io.Writer
	io.ReaderAt
	size() int64
	reset() error
	flush() error // makes what was written visible to ReadAt
}

// memSink keeps the decoded kernel in memory.
type memSink struct{ b []byte }

func (m *memSink) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }
func (m *memSink) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSink) size() int64  { return int64(len(m.b)) }
func (m *memSink) reset() error { m.b = m.b[:0]; return nil }
func (m *memSink) flush() error { return nil }

// fileSink streams the decoded kernel to a file through a small buffer.
type fileSink struct {
	f *os.File
	w *bufio.Writer
	n int64
}

func (s *fileSink) Write(p []byte) (int, error) {
	if s.w == nil {
		s.w = bufio.NewWriterSize(s.f, 1<<20)
	}
	k, err := s.w.Write(p)
	s.n += int64(k)
	return k, err
}

func (s *fileSink) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }
func (s *fileSink) size() int64                             { return s.n }

func (s *fileSink) reset() error {
	if s.w != nil {
		s.w.Reset(s.f)
	}
	s.n = 0
	if err := s.f.Truncate(0); err != nil {
		return err
	}
	_, err := s.f.Seek(0, io.SeekStart)
	return err
}

func (s *fileSink) flush() error {
	if s.w == nil {
		return nil
	}
	return s.w.Flush()
}
