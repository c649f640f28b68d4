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
	"sync"
	"testing"
	"time"
)

// TestRefusesEscapes sends each way out under every policy: the stream is
// refused, naming the entry, and nothing outside the destination changes.
func TestRefusesEscapes(t *testing.T) {
	cases := map[string]struct {
		pre   func(j jail) // what the destination holds before
		es    []ent
		entry string
	}{
		"dotdot":              {es: []ent{reg("../outside/x", "x")}, entry: "../outside/x"},
		"inner dotdot":        {es: []ent{reg("a/../../outside/x", "x")}, entry: "a/../../outside/x"},
		"rooted dotdot":       {es: []ent{reg("/../outside/x", "x")}, entry: "/../outside/x"},
		"symlink then file":   {es: []ent{sym("l", "../outside"), reg("l/x", "x")}, entry: "l/x"},
		"abs symlink parent":  {es: []ent{sym("l", "OUTSIDE"), reg("l/x", "x")}, entry: "l/x"},
		"symlink grandparent": {es: []ent{sym("l", "../outside"), reg("l/a/b", "x")}, entry: "l/a/b"},
		"symlink then dir":    {es: []ent{sym("l", "../outside"), dir("l/d/")}, entry: "l/d/"},
		"hardlink outside":    {es: []ent{hard("h", "../outside/secret")}, entry: "h"},
		"hardlink via link":   {es: []ent{sym("l", "../outside"), hard("h", "l/secret")}, entry: "h"},
		"hardlink rooted":     {es: []ent{hard("h", "/../../outside/secret")}, entry: "h"},
		"existing symlink": {
			pre: func(j jail) { _ = os.Symlink(j.outside, filepath.Join(j.dst, "l")) },
			es:  []ent{reg("l/x", "x")}, entry: "l/x",
		},
	}
	for name, c := range cases {
		for pname, opts := range policies(jail{}) {
			t.Run(name+"/"+pname, func(t *testing.T) {
				j := newJail(t)
				es := append([]ent(nil), c.es...)
				for i := range es {
					es[i].link = strings.ReplaceAll(es[i].link, "OUTSIDE", j.outside)
					if opts.Top != "" {
						es[i].name = strings.Replace(es[i].name, "", "top/", 1)
						if es[i].typ == tar.TypeLink {
							es[i].link = "top/" + es[i].link
						}
					}
				}
				if c.pre != nil {
					c.pre(j)
					if opts.Top != "" {
						t.Skip("Top must not exist beforehand")
					}
				}
				err := Extract(context.Background(), bytes.NewReader(mkTar(t, es...)), j.dst, opts)
				want := c.entry
				if opts.Top != "" {
					want = "top/" + want
				}
				named := err != nil && strings.Contains(err.Error(), `"`+want+`"`)
				if opts.ContainSymlinks && err != nil {
					// The symlink itself is refused first.
					named = named || strings.Contains(err.Error(), `"l"`)
				}
				if !named {
					t.Fatalf("got %v, want a refusal naming %q", err, want)
				}
				j.check(t)
			})
		}
	}
}

// TestAbsoluteNames: refused unless RootedNames, which takes them as
// relative to the destination.
func TestAbsoluteNames(t *testing.T) {
	j := newJail(t)
	stream := mkTar(t, dir("/etc/"), reg("/etc/hostname", "vm\n"), reg("./etc/motd", "hi\n"))
	var esc *EscapeError
	if err := Extract(context.Background(), bytes.NewReader(stream), j.dst, Options{}); !errors.As(err, &esc) || esc.Name != "/etc/" {
		t.Fatalf("strict: got %v, want an EscapeError for /etc/", err)
	}
	if err := Extract(context.Background(), bytes.NewReader(stream), j.dst, Options{RootedNames: true}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"etc/hostname": "vm\n", "etc/motd": "hi\n"} {
		if b, err := os.ReadFile(filepath.Join(j.dst, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}
	j.check(t)
}

// TestSymlinkSwappedDuringExtraction races the extraction with a
// goroutine that keeps swapping the directory being filled for a symlink
// to outside/ and back. The extraction may fail or not; nothing may land
// outside.
func TestSymlinkSwappedDuringExtraction(t *testing.T) {
	es := []ent{dir("d/")}
	for i := range 1000 {
		es = append(es, reg(fmt.Sprintf("d/f%d", i), "evil"))
	}
	stream := mkTar(t, es...)
	for pname, opts := range policies(jail{}) {
		if opts.Top != "" {
			continue
		}
		t.Run(pname, func(t *testing.T) {
			for range 2 {
				j := newJail(t)
				d, aside := filepath.Join(j.dst, "d"), filepath.Join(j.dst, "aside")
				stop, started := make(chan struct{}), make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					close(started)
					for {
						select {
						case <-stop:
							return
						default:
						}
						if os.Rename(d, aside) == nil {
							_ = os.Symlink(j.outside, d)
							time.Sleep(20 * time.Microsecond)
							_ = os.Remove(d)
							_ = os.Rename(aside, d)
						}
						time.Sleep(20 * time.Microsecond)
					}
				}()
				<-started
				_ = Extract(context.Background(), bytes.NewReader(stream), j.dst, opts)
				close(stop)
				wg.Wait()
				j.check(t)
			}
		})
	}
}
