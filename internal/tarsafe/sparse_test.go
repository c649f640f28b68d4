package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawBlock is a ustar header block, made by hand for the types
// tar.Writer will not write.
func rawBlock(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x00")
	copy(b[263:], "00")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }

// paxRecord is one "len key=value\n" record.
func paxRecord(k, v string) string {
	r := " " + k + "=" + v + "\n"
	n := len(r) + 1
	for len(fmt.Sprint(n))+len(r) != n {
		n++
	}
	return fmt.Sprint(n) + r
}

// sparseTar is a PAX (GNU 1.0) sparse entry "big" of realsize bytes
// whose only data is one byte at its end: a thousand bytes of stream.
func sparseTar(t *testing.T, realsize int64) []byte {
	t.Helper()
	pax := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "big") + paxRecord("GNU.sparse.realsize", fmt.Sprint(realsize))
	m := fmt.Sprintf("1\n%d\n1\n", realsize-1)
	body := append(pad([]byte(m)), 'x')
	var out []byte
	out = append(out, rawBlock("PaxHeaders/big", tar.TypeXHeader, int64(len(pax)))...)
	out = append(out, pad([]byte(pax))...)
	out = append(out, rawBlock("GNUSparseFile.0/big", tar.TypeReg, int64(len(body)))...)
	out = append(out, pad(body)...)
	return append(out, make([]byte, 1024)...)
}

// TestHugeSparseMap: a thousand bytes of sparse map that claim a file of
// 2^40 bytes. archive/tar makes up a hole's zeros as they are read, so
// the extractor would grind through them for minutes (for ever, with a
// larger claim) and, with no FileBytes bound (a copy out of a guest, an
// image layer), leave a file of that size. It is refused at once.
func TestHugeSparseMap(t *testing.T) {
	for _, lim := range []*Limits{nil, {FileBytes: 1 << 50}, {Entries: 10}} {
		d := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		err := Extract(ctx, bytes.NewReader(sparseTar(t, 1<<40)), d, Options{Limits: lim})
		cancel()
		var le *LimitError
		if !errors.As(err, &le) || le.What != "sparse bytes" {
			t.Errorf("limits %+v: got %v after %v, want a LimitError on sparse bytes", lim, err, time.Since(start))
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("limits %+v: refusing took %v", lim, took)
		}
		if got := names(t, d); len(got) != 0 {
			t.Errorf("left %v", got)
		}
	}
	// A sparse file of reasonable size is still made, with its hole.
	d := t.TempDir()
	if err := Extract(context.Background(), bytes.NewReader(sparseTar(t, 64<<20)), d, Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(d, "big"))
	if err != nil || fi.Size() != 64<<20 {
		t.Fatalf("big: %v, %v", fi, err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 > 1<<20 {
		t.Errorf("big takes %d bytes: the hole was written", st.Blocks*512)
	}
}

// TestBadSizes: PAX size records and header sizes that are negative,
// huge or not numbers fail the stream; nothing is left outside, and no
// file claims what was not sent.
func TestBadSizes(t *testing.T) {
	paxed := func(k, v string) []byte {
		pax := paxRecord(k, v)
		out := append(rawBlock("PaxHeaders/f", tar.TypeXHeader, int64(len(pax))), pad([]byte(pax))...)
		out = append(out, rawBlock("f", tar.TypeReg, 1)...)
		out = append(out, pad([]byte("x"))...)
		return append(out, make([]byte, 1024)...)
	}
	neg := rawBlock("f", tar.TypeReg, 0)
	copy(neg[124:136], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe})
	huge := rawBlock("f", tar.TypeReg, 0)
	copy(huge[124:136], []byte{0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	for name, stream := range map[string][]byte{
		"pax negative":   paxed("size", "-5"),
		"pax huge":       paxed("size", "99999999999999999999"),
		"pax not number": paxed("size", "0x10"),
		"pax long path":  paxed("path", strings.Repeat("a/", 3000)),
		"header neg":     append(neg, make([]byte, 1024)...),
		"header huge":    append(huge, make([]byte, 1024)...),
	} {
		for pname, opts := range policies(jail{}) {
			j := newJail(t)
			err := Extract(context.Background(), bytes.NewReader(stream), j.dst, opts)
			if err == nil {
				t.Errorf("%s/%s: taken", name, pname)
			}
			j.check(t)
		}
	}
}
