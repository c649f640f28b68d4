package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
	"time"
)

// paxArchive writes the release entries as a gzip'd PAX tar, each entry
// preceded by floods PAX headers holding a comment of comment bytes
// (archive/tar keeps only the last before an entry, handing none on).
func paxArchive(t testing.TB, floods, comment int) []byte {
	t.Helper()
	// One PAX header with its records, cut from before its entry.
	var one bytes.Buffer
	tw := tar.NewWriter(&one)
	hdr := &tar.Header{Name: "x", Typeflag: tar.TypeReg, Format: tar.FormatPAX, PAXRecords: map[string]string{"comment": strings.Repeat("c", comment)}}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	pax := one.Bytes()[:one.Len()-512]
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw = tar.NewWriter(gz)
	for _, e := range releaseEntries() {
		for range floods {
			if _, err := gz.Write(pax); err != nil {
				t.Fatal(err)
			}
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
