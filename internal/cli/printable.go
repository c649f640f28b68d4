package cli

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable makes text that came from elsewhere (a phase named after a
// file of a pulled image, an error of a remote server, a VM's name) safe
// to print on a terminal: control characters (escape sequences, carriage
// returns, newlines and tabs that would break a table), bidirectional
// overrides and invalid UTF-8 are shown escaped, as Go quotes them.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x` + strconv.FormatUint(uint64(s[i])>>4, 16) + strconv.FormatUint(uint64(s[i])&0xf, 16))
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// unsafeRune: a control character, a bidirectional override or isolate,
// or the mark of invalid UTF-8.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || r == utf8.RuneError ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// truncate cuts s to at most max bytes, ending in "..." when it cut, and
// never inside a UTF-8 sequence.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// printableLines is printable for text of several lines (an error that
// quotes the tail of a guest's console): its line breaks are kept, every
// other control character is escaped.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}
