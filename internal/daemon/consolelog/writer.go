package consolelog

import (
	"io"
	"unicode/utf8"
)

// maxHold bounds what a Writer holds back of an escape sequence or a rune
// that a write leaves unfinished.
const maxHold = 256

// Writer passes a stream through Sanitize to w as it comes. An escape
// sequence or UTF-8 rune cut between two writes is held back until the
// rest comes (up to maxHold bytes), so that it is removed or kept whole
// rather than printed in pieces. Close writes what is held.
type Writer struct {
	w    io.Writer
	held []byte
}

// NewWriter returns a Writer that writes sanitized text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (s *Writer) Write(p []byte) (int, error) {
	b := append(s.held, p...)
	cut := unfinished(b)
	if _, err := io.WriteString(s.w, Sanitize(b[:cut])); err != nil {
		return 0, err
	}
	s.held = append(s.held[:0:0], b[cut:]...)
	return len(p), nil
}

// Close writes what is held back.
func (s *Writer) Close() error {
	if len(s.held) == 0 {
		return nil
	}
	_, err := io.WriteString(s.w, Sanitize(s.held))
	s.held = nil
	return err
}

// unfinished returns where an escape sequence or rune that b's end may
// have cut begins, len(b) when there is none.
func unfinished(b []byte) int {
	start := max(0, len(b)-maxHold)
	for i := len(b) - 1; i >= start; i-- {
		if b[i] == 0x1b && skipEscape(b, i+1) == len(b) && !terminated(b[i:]) {
			return i
		}
	}
	// A rune's first byte within its last 3 bytes.
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// terminated reports whether the escape sequence seq (from its ESC) ends
// exactly at its last byte, so that nothing of it can follow.
func terminated(seq []byte) bool {
	if len(seq) < 2 {
		return false
	}
	last := seq[len(seq)-1]
	switch seq[1] {
	case '[':
		return len(seq) > 2 && last >= 0x40 && last <= 0x7e
	case ']', 'P', 'X', '^', '_':
		return last == 0x07 || len(seq) > 3 && last == '\\' && seq[len(seq)-2] == 0x1b
	}
	return last >= 0x30 && last <= 0x7e
}
