package client_test

import (
	"banger/internal/testutil/treestate"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/guest/client"
)

// sparseBomb is a PAX (GNU 1.0) sparse entry name/big claiming realsize
// bytes with one byte of data: about two KiB of stream, made by hand as
// tar.Writer writes no sparse entries.
func sparseBomb(name string, realsize int64) []byte {
	block := func(n string, typ byte, size int64) []byte {
		b := make([]byte, 512)
		copy(b, n)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		return b
	}
	pad := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	rec := func(k, v string) string {
		r := " " + k + "=" + v + "\n"
		n := len(r) + 1
		for len(fmt.Sprint(n))+len(r) != n {
			n++
		}
		return fmt.Sprint(n) + r
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", name) + rec("GNU.sparse.realsize", fmt.Sprint(realsize))
	body := append(pad([]byte(fmt.Sprintf("1\n%d\n1\n", realsize-1))), 'x')
	out := append(block("PaxHeaders/x", 'x', int64(len(pax))), pad([]byte(pax))...)
	out = append(out, block("GNUSparseFile.0/x", '0', int64(len(body)))...)
	out = append(out, pad(body)...)
	return append(out, make([]byte, 1024)...)
}

// TestCopyOutRefusesASparseBomb: a guest answering a copy-out with a
// sparse entry that claims 16 TiB in two KiB must not keep the copy
// grinding through zeros (for hours) nor leave a file of that size.
func TestCopyOutRefusesASparseBomb(t *testing.T) {
	base, home := victimHome(t)
	stream := sparseBomb("wanted.txt", 16<<40-4096)
	open, _ := hostileGuest(t, func() []byte { return stream })
	c := client.New(open, client.Config{Version: "test"})
	before := treestate.Snapshot(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := c.CopyOut(ctx, "/root/wanted.txt", home, client.CopyOutOptions{})
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("after %v: got %v, want the sparse entry refused", time.Since(start), err)
	}
	if diff := diffTrees(before, treestate.Snapshot(t, base), ""); len(diff) > 0 {
		t.Errorf("the refused copy changed the host:\n%s", strings.Join(diff, "\n"))
	}
	if _, err := os.Lstat(filepath.Join(home, "wanted.txt")); err == nil {
		t.Error("home/wanted.txt was left")
	}
}
