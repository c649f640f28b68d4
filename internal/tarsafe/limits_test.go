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
	"testing"
)

func TestLimits(t *testing.T) {
	many := func(n int) []ent {
		var es []ent
		for i := range n {
			es = append(es, reg(fmt.Sprintf("f%03d", i), "0123456789"))
		}
		return es
	}
	cases := map[string]struct {
		lim  Limits
		what string
	}{
		"entries":    {Limits{Entries: 9}, "entries"},
		"name bytes": {Limits{NameBytes: 39}, "name bytes"},
		"file bytes": {Limits{FileBytes: 99}, "file bytes"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			lim := c.lim
			// Ten entries of four-byte names and ten bytes each: one over.
			err := extract(t, t.TempDir(), Options{Limits: &lim}, many(10)...)
			var le *LimitError
			if !errors.As(err, &le) || le.What != c.what {
				t.Fatalf("got %v, want a LimitError on %s", err, c.what)
			}
			ok := c.lim
			switch c.what {
			case "entries":
				ok.Entries++
			case "name bytes":
				ok.NameBytes++
			default:
				ok.FileBytes++
			}
			if err := extract(t, t.TempDir(), Options{Limits: &ok}, many(10)...); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
		})
	}
	t.Run("shared", func(t *testing.T) {
		lim := &Limits{Entries: 15}
		if err := extract(t, t.TempDir(), Options{Limits: lim}, many(10)...); err != nil {
			t.Fatal(err)
		}
		var le *LimitError
		if err := extract(t, t.TempDir(), Options{Limits: lim}, many(10)...); !errors.As(err, &le) || !strings.Contains(err.Error(), "more than 15 entries") {
			t.Fatalf("the second stream over the shared bound: %v", err)
		}
	})
	t.Run("huge sparse size", func(t *testing.T) {
		// A header claiming far more than the bound fails before any byte.
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
		d := t.TempDir()
		err := Extract(context.Background(), &buf, d, Options{Limits: &Limits{FileBytes: 1 << 20}})
		if err == nil || !strings.Contains(err.Error(), `"big"`) {
			t.Fatalf("got %v", err)
		}
		if _, err := os.Lstat(filepath.Join(d, "big")); err == nil {
			t.Fatal("big was created")
		}
	})
}

func TestLongNames(t *testing.T) {
	long := strings.Repeat("n", maxNameLen+1)
	var esc *EscapeError
	if err := extract(t, t.TempDir(), Options{}, reg(long, "")); !errors.As(err, &esc) {
		t.Errorf("a name over PATH_MAX: %v", err)
	}
	if err := extract(t, t.TempDir(), Options{}, sym("l", long)); !errors.As(err, &esc) {
		t.Errorf("a link target over PATH_MAX: %v", err)
	}
}

func TestMaxTrailer(t *testing.T) {
	stream := mkTar(t, reg("a", "x"))
	ok := append(append([]byte(nil), stream...), make([]byte, 1024)...)
	if err := Extract(context.Background(), bytes.NewReader(ok), t.TempDir(), Options{MaxTrailer: 10240}); err != nil {
		t.Fatalf("padding: %v", err)
	}
	bad := append(append([]byte(nil), stream...), make([]byte, 20000)...)
	if err := Extract(context.Background(), bytes.NewReader(bad), t.TempDir(), Options{MaxTrailer: 10240}); err == nil || !strings.Contains(err.Error(), "follow the tar stream's end") {
		t.Fatalf("garbage after the end: %v", err)
	}
}

// FuzzExtract feeds arbitrary bytes to the extractor under each caller's
// policy. It must never panic and never change anything outside the
// destination.
func FuzzExtract(f *testing.F) {
	f.Add(mkTar(f, dir("a/"), reg("a/f", "x"), sym("a/l", "f"), hard("a/h", "a/f")), uint8(0))
	f.Add(mkTar(f, reg("../outside/x", "evil")), uint8(1))
	f.Add(mkTar(f, sym("l", "../outside"), reg("l/x", "evil")), uint8(2))
	f.Add(mkTar(f, sym("l", "../outside"), hard("h", "l/secret")), uint8(2))
	f.Add(mkTar(f, dir("d/"), reg("d/x", "1"), reg("d/.wh..wh..opq", ""), reg(".wh.d", "")), uint8(2))
	f.Add(mkTar(f, reg("a", "1"), reg("a", "2"), sym("a", "b"), dir("a/")), uint8(3))
	f.Add(mkTar(f, reg("top/a", "1"), reg("b", "2")), uint8(4))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, policy uint8) {
		j := newJail(t)
		all := policies(j)
		keys := []string{"strict", "files", "image", "package", "top"}
		opts := all[keys[int(policy)%len(keys)]]
		opts.Limits = &Limits{Entries: 1000, FileBytes: 8 << 20}
		_ = Extract(context.Background(), bytes.NewReader(data), j.dst, opts)
		j.check(t)
	})
}
