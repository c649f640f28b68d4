package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// paxArchive writes the release entries as a gzip'd PAX tar, each entry
// preceded by floods PAX headers holding a comment of comment bytes
// (archive/tar keeps only the last before an entry, handing none on).
func paxArchive(t testing.TB, floods, comment int) []byte {
	t.Helper()
	pax := paxHeader(t, map[string]string{"comment": strings.Repeat("c", comment)})
	return rawArchive(t, func(string) []byte { return bytes.Repeat(pax, floods) })
}

// paxHeader is a PAX extended header carrying records, alone: archive/tar
// applies them to whatever entry follows. It is made by hand, since
// tar.Writer drops records for the fields of its Header (path, size).
func paxHeader(t testing.TB, records map[string]string) []byte {
	t.Helper()
	var data []byte
	for k, v := range records {
		rec := k + "=" + v + "\n"
		n := len(rec) + 1
		for len(strconv.Itoa(n))+1+len(rec) != n {
			n = len(strconv.Itoa(n)) + 1 + len(rec)
		}
		data = append(data, strconv.Itoa(n)+" "+rec...)
	}
	var one bytes.Buffer
	tw := tar.NewWriter(&one)
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/x", Typeflag: tar.TypeReg, Size: int64(len(data)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	b := bytes.Clone(one.Bytes())
	// Make it an 'x' header, and fix its checksum.
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// rawArchive writes the release entries as a gzip'd tar, each preceded by
// the raw bytes before(name).
func rawArchive(t testing.TB, before func(name string) []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range releaseEntries() {
		if _, err := gz.Write(before(e.name)); err != nil {
			t.Fatal(err)
		}
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// What an archive inflates to is bounded by its entries, not only their
// contents: a flood of PAX headers (a few KiB of gzip per GiB) is
// refused once it passes maxMeta, while a few ordinary ones pass.
func TestExtractBoundsHeaders(t *testing.T) {
	dir := t.TempDir()
	files, err := Extract(bytes.NewReader(paxArchive(t, 1, 1024)), dir)
	if err != nil {
		t.Fatalf("an archive with small PAX headers: %v", err)
	}
	checkExtracted(t, dir, files)

	flood := paxArchive(t, 3, 900<<10) // 2.6 MiB of headers before each entry
	dir = t.TempDir()
	files, err = Extract(bytes.NewReader(flood), dir)
	if err == nil || !strings.Contains(err.Error(), "tar headers") {
		t.Fatalf("a flood of PAX headers (%d bytes of gzip): %v, %v; want refused", len(flood), files, err)
	}
	checkEmpty(t, dir)
}

// An empty binary would run as an empty shell script, doing nothing and
// exiting 0: a release that packed one is refused.
func TestExtractRefusesEmptyBinary(t *testing.T) {
	for _, bin := range Binaries {
		es := releaseEntries()
		for i := range es {
			if es[i].name == bin {
				es[i].body = nil
			}
		}
		dir := t.TempDir()
		files, err := Extract(bytes.NewReader(makeArchive(t, es)), dir)
		if err == nil || !strings.Contains(err.Error(), bin+" is empty") {
			t.Fatalf("empty %s: %v, %v; want refused", bin, files, err)
		}
		checkEmpty(t, dir)
	}
	// Empty docs are fine.
	es := releaseEntries()
	es[len(es)-1].body = nil
	if _, err := Extract(bytes.NewReader(makeArchive(t, es)), t.TempDir()); err != nil {
		t.Fatalf("empty %s: %v", es[len(es)-1].name, err)
	}
}

// PAX records override the header they precede, and Extract judges what
// archive/tar makes of both: a path or size slipped in by PAX, or a
// sparse map, is refused as the plain header would be.
func TestExtractPAXOverrides(t *testing.T) {
	cases := map[string]struct {
		target  string
		records map[string]string
		want    string
	}{
		"path climbs":    {"banger", map[string]string{"path": "../banger"}, "not one of"},
		"path renames":   {"install.md", map[string]string{"path": "banger"}, "twice"},
		"size grows":     {"install.md", map[string]string{"size": "99999999999"}, "larger than"},
		"sparse":         {"banger", map[string]string{"GNU.sparse.size": "1000000", "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,19"}, "sparse file"},
		"xattr not kept": {"banger", map[string]string{"SCHILY.xattr.security.capability": "x"}, ""},
		"long path":      {"bangerd", map[string]string{"path": strings.Repeat("a/", 200) + "bangerd"}, "not one of"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			pax := paxHeader(t, c.records)
			data := rawArchive(t, func(n string) []byte {
				if n == c.target {
					return pax
				}
				return nil
			})
			dir := t.TempDir()
			files, err := Extract(bytes.NewReader(data), dir)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				checkExtracted(t, dir, files)
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, %v; want an error saying %q", files, err, c.want)
			}
			t.Log(err)
			checkEmpty(t, dir)
		})
	}
}
