package tarsafe

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestContainSymlinksThroughAnotherLink: a link whose target goes down
// through another link and then up ("s/../x") is inside by its letters
// but not once s is followed: s -> ../../.. is the destination, so s/..
// is its parent. Every link must stay inside when followed.
func TestContainSymlinksThroughAnotherLink(t *testing.T) {
	opts := Options{Replace: ReplaceFiles, ContainSymlinks: true}
	for _, order := range [][]ent{
		{dir("a/"), dir("a/b/"), sym("a/b/s", "../.."), sym("a/b/t", "s/../outside/secret")},
		{dir("a/"), dir("a/b/"), sym("a/b/t", "s/../outside/secret"), sym("a/b/s", "../..")},
		{dir("a/"), sym("a/t", "d/../../outside/secret"), sym("a/d", ".")},
	} {
		j := newJail(t)
		err := extract(t, j.dst, opts, order...)
		var esc *EscapeError
		if !errors.As(err, &esc) {
			for _, e := range order {
				if e.typ != tar.TypeSymlink {
					continue
				}
				if p, rerr := filepath.EvalSymlinks(filepath.Join(j.dst, e.name)); rerr == nil && !strings.HasPrefix(p, j.dst) {
					t.Errorf("%v: the link %s leads to %s, outside the destination", order, e.name, p)
				}
			}
			t.Errorf("%v: got %v, want an EscapeError", order, err)
		}
		j.check(t)
	}
	// Leading ".." and plain names below stay allowed.
	if err := extract(t, t.TempDir(), opts, dir("a/"), dir("a/b/"), sym("a/b/s", "../../a/./b"), sym("a/b/u", "../b/s")); err != nil {
		t.Fatalf("links that stay inside: %v", err)
	}
}

// TestHostileWhiteouts: whiteouts naming "..", the destination or
// nothing are refused or do nothing outside; an opaque whiteout of the
// root hides lower content only.
func TestHostileWhiteouts(t *testing.T) {
	opts := policies(jail{})["image"]
	for _, name := range []string{".wh..", ".wh...", "/.wh..", "a/.wh..", "a/.wh.", "../.wh.x", "/../.wh.outside", "a/../../.wh.outside"} {
		j := newJail(t)
		_ = os.Mkdir(filepath.Join(j.dst, "a"), 0o755)
		_ = extract(t, j.dst, opts, reg(name, ""))
		j.check(t)
		if _, err := os.Stat(filepath.Join(j.dst, "a")); err != nil && !strings.HasPrefix(name, "a/") {
			t.Errorf("%s removed a: %v", name, err)
		}
	}
	j := newJail(t)
	_ = os.WriteFile(filepath.Join(j.dst, "lower"), nil, 0o644)
	if err := extract(t, j.dst, opts, reg("upper", "u"), reg("/.wh..wh..opq", "")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, j.dst); len(got) != 1 || got[0] != "upper" {
		t.Fatalf("after an opaque root: %v", got)
	}
	j.check(t)
	// A whiteout under a link to outside removes nothing there.
	j = newJail(t)
	if err := extract(t, j.dst, opts, sym("l", j.outside), reg("l/.wh.secret", "")); err == nil {
		t.Log("whiteout through a link: no error")
	}
	j.check(t)
	j = newJail(t)
	_ = extract(t, j.dst, opts, sym("l", "../outside"), reg("l/.wh..wh..opq", ""))
	j.check(t)
}

// TestHardlinkToSymlink: without SpecialMake a hard link may only name a
// regular file, never a symlink (which would give the stream a second
// name for a link to outside, past any check made on names).
func TestHardlinkToSymlink(t *testing.T) {
	for pname, opts := range policies(jail{}) {
		if opts.Special == SpecialMake || opts.Top != "" {
			continue
		}
		j := newJail(t)
		err := extract(t, j.dst, opts, sym("l", "../outside/secret"), hard("h", "l"), reg("h", "x"))
		if err == nil {
			t.Errorf("%s: a hard link to a symlink was taken", pname)
		}
		j.check(t)
	}
	// With SpecialMake it may, and a later file of the link's name
	// replaces the link rather than writing through it.
	j := newJail(t)
	_ = extract(t, j.dst, policies(j)["image"], sym("l", j.outside+"/secret"), hard("h", "l"), reg("h", "x"), reg("l", "y"))
	j.check(t)
}

// TestDirReplacedBySymlink: a directory replaced by a link to outside
// in mid-stream, then written under.
func TestDirReplacedBySymlink(t *testing.T) {
	for pname, opts := range policies(jail{}) {
		if opts.Top != "" {
			continue
		}
		j := newJail(t)
		_ = extract(t, j.dst, opts, dir("d/"), reg("d/a", "a"), sym("d", "../outside"), reg("d/secret", "x"), dir("d/sub/"), hard("d/h", "d/a"))
		j.check(t)
		j = newJail(t)
		_ = extract(t, j.dst, opts, dir("d/"), reg("d/a", "a"), sym("d", j.outside), reg("d/secret", "x"))
		j.check(t)
		_ = pname
	}
}
