package qemuproc

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"banger/internal/daemon/consolelog"
)

// freePort asks the kernel for a free TCP port on addr. QEMU binds it a
// moment later; if another program takes it in between, Start retries.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", addr, err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return strconv.Atoi(port)
}

// logTail returns the last lines QEMU wrote to its log, most useful first:
// the many "warning:" lines of -cpu max under TCG are left out when there
// is anything else.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4096
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	var all, other []string
	for _, l := range strings.Split(consolelog.Sanitize(b), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		all = append(all, l)
		if !strings.Contains(l, "warning:") {
			other = append(other, l)
		}
	}
	if len(other) > 0 {
		all = other
	}
	if len(all) > 5 {
		all = all[len(all)-5:]
	}
	return strings.Join(all, " | ")
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
