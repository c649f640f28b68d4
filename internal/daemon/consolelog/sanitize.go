package consolelog

import (
	"strings"
	"unicode/utf8"
)

// Sanitize returns b as printable text: escape sequences and control
// characters removed (newline and tab kept), bidirectional controls removed,
// and invalid UTF-8 replaced by U+FFFD.
func Sanitize(b []byte) string {
	var out strings.Builder
	out.Grow(len(b))
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == 0x1b: // ESC
			i = skipEscape(b, i+1)
			continue
		case c == '\n' || c == '\t':
			out.WriteByte(c)
			i++
			continue
		case c < 0x20 || c == 0x7f:
			i++
			continue
		case c < utf8.RuneSelf:
			out.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			out.WriteRune(utf8.RuneError)
		case r == 0x9b: // C1 CSI
			i = skipCSI(b, i+n)
			continue
		case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f: // C1 OSC, DCS, SOS, PM, APC
			i = skipString(b, i+n)
			continue
		case r >= 0x80 && r < 0xa0: // other C1 controls
		case bidi(r):
		default:
			out.WriteRune(r)
		}
		i += n
	}
	return out.String()
}

// bidi reports the invisible characters that reorder or hide text.
func bidi(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// skipEscape returns the index after the escape sequence whose ESC is just
// before i.
func skipEscape(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '[':
		return skipCSI(b, i+1)
	case ']', 'P', 'X', '^', '_': // OSC, DCS, SOS, PM, APC: a string up to ST
		return skipString(b, i+1)
	}
	// nF sequences: intermediates 0x20-0x2f, then one final byte.
	for i < len(b) && b[i] >= 0x20 && b[i] <= 0x2f {
		i++
	}
	if i < len(b) && b[i] >= 0x30 && b[i] <= 0x7e {
		i++
	}
	return i
}

// skipCSI skips parameter and intermediate bytes and the final byte of a
// control sequence. A byte that cannot be part of one ends it unconsumed.
func skipCSI(b []byte, i int) int {
	for i < len(b) && b[i] >= 0x20 && b[i] <= 0x3f {
		i++
	}
	if i < len(b) && b[i] >= 0x40 && b[i] <= 0x7e {
		i++
	}
	return i
}

// skipString skips a control string up to and including its terminator:
// BEL, ESC \ or the C1 ST. An unterminated string runs to the end.
func skipString(b []byte, i int) int {
	for i < len(b) {
		switch {
		case b[i] == 0x07:
			return i + 1
		case b[i] == 0x1b:
			if i+1 < len(b) && b[i+1] == '\\' {
				return i + 2
			}
			return i + 1
		case b[i] == 0xc2 && i+1 < len(b) && b[i+1] == 0x9c: // U+009C ST
			return i + 2
		}
		i++
	}
	return i
}
