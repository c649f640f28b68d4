package consolelog

import (
	"io"
	"os"
	"strings"
)

// TailBytes is how much of the end of a log Tail reads.
const TailBytes = 64 << 10

// maxLineRunes bounds each line Tail returns.
const maxLineRunes = 240

// Tail returns up to n of the last lines of the log at path, sanitized, each
// cut to a bounded length. It reads at most TailBytes from the end of the
// file, whatever its size; a missing or empty log gives nil.
func Tail(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	off := int64(0)
	if fi.Size() > TailBytes {
		off = fi.Size() - TailBytes
	}
	buf := make([]byte, TailBytes)
	m, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil
	}
	data := buf[:m]
	if off > 0 {
		// The first line is cut: drop it.
		if i := strings.IndexByte(string(data), '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	var lines []string
	for _, l := range strings.Split(Sanitize(data), "\n") {
		if l = strings.TrimRight(l, " \t"); l == "" {
			continue
		}
		if r := []rune(l); len(r) > maxLineRunes {
			l = string(r[:maxLineRunes]) + "…"
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
