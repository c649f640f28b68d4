package release

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"banger/internal/tarsafe"
)

// Bounds on the entries of a release archive, checked against each tar
// header before a byte of the entry is written (archive/tar hands out
// exactly the header's size of contents, no more).
const (
	MaxBinarySize = 128 << 20 // each of Binaries
	MaxOtherSize  = 4 << 20   // each unit, install.md, CHANGELOG.md
)

// maxTrailer bounds what may follow the tar end-of-archive marker inside
// the gzip stream (a tar writer pads to its record size, 10 KiB).
const maxTrailer = 64 << 10

// maxMeta bounds the bytes of the tar stream that are neither the
// contents of entries nor the trailer: headers, PAX records, GNU long
// names, padding. archive/tar reads any number of PAX headers of up to
// 1 MiB each before an entry, handing none of them on, so without this
// bound a few MiB of gzip inflate into gigabytes of headers read and
// thrown away. A release archive has a few KiB of them.
const maxMeta = 1 << 20

// Extract reads a release archive (gzip'd tar) from r into dir, an empty
// private directory, and returns the path of each entry by name. Only the
// names of ArchiveFiles are accepted, each once, as regular files within
// size bounds (binaries not empty); every one must be present. The
// binaries get mode 0755, the rest 0644, whatever the archive says.
//
// Names are taken exactly ("./banger" or "dir/banger" is refused), one
// gzip member with nothing after it, and its checksum must hold. What it
// inflates to is bounded too: the entries' sizes, plus maxMeta of tar
// headers and padding, plus maxTrailer. Files are
// created through tarsafe (an os.Root on dir, O_EXCL); when Extract fails
// it removes every file it made.
func Extract(r io.Reader, dir string) (files map[string]string, err error) {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("the release archive is not gzip: %w", err)
	}
	gz.Multistream(false)
	x := &archiveFilter{seen: map[string]bool{}, budget: &budgetReader{r: gz, allowed: maxMeta + maxTrailer + 1}}
	defer func() {
		if err != nil {
			if cerr := x.removeAll(dir); cerr != nil {
				err = fmt.Errorf("%w; removing what was extracted also failed: %v", err, cerr)
			}
			files = nil
		}
	}()
	opts := tarsafe.Options{
		Filter:     x.filter,
		Placed:     x.place,
		MaxTrailer: maxTrailer,
		Limits: &tarsafe.Limits{
			Entries:   int64(2 * len(ArchiveFiles)),
			NameBytes: 4096,
			FileBytes: int64(len(Binaries))*MaxBinarySize + int64(len(ArchiveFiles)-len(Binaries))*MaxOtherSize,
		},
	}
	if err := tarsafe.Extract(context.Background(), x.budget, dir, opts); err != nil {
		return nil, fmt.Errorf("the release archive is damaged or not a banger release (nothing of it was kept): %w", err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("the release archive has bytes after its gzip stream; refusing it")
	}
	files = map[string]string{}
	for _, name := range ArchiveFiles {
		if !x.seen[name] {
			return nil, fmt.Errorf("the release archive has no %s; refusing an incomplete release", name)
		}
		files[name] = filepath.Join(dir, name)
	}
	return files, nil
}

// archiveFilter is the policy of Extract: it sees each header first.
type archiveFilter struct {
	seen   map[string]bool // names taken
	made   []string        // names made in dir, for removal on failure
	budget *budgetReader   // the inflated stream, allowed each entry's size
}

// errMeta is the error of a stream over its budget of headers.
var errMeta = fmt.Errorf("more than %d bytes of tar headers and padding (a release archive has a few KiB); refusing the archive", maxMeta)

// budgetReader reads at most allowed bytes of r; the filter adds each
// accepted entry's size (with its padding) as it comes.
type budgetReader struct {
	r             io.Reader
	read, allowed int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	left := b.allowed - b.read
	if left <= 0 {
		return 0, errMeta
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	return n, err
}

func (x *archiveFilter) filter(hdr *tar.Header) (*tar.Header, error) {
	name := hdr.Name
	if !slices.Contains(ArchiveFiles, name) {
		return nil, fmt.Errorf("entry %q is not one of the files of a release (%s); refusing the archive", clip(name, 80), strings.Join(ArchiveFiles, ", "))
	}
	if x.seen[name] {
		return nil, fmt.Errorf("entry %s appears twice; refusing the archive", name)
	}
	x.seen[name] = true
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("entry %s is not a regular file (tar type %q); refusing the archive", name, hdr.Typeflag)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, fmt.Errorf("entry %s is a sparse file; release archives hold plain files only", name)
		}
	}
	limit, mode := int64(MaxOtherSize), int64(0o644)
	if slices.Contains(Binaries, name) {
		limit, mode = MaxBinarySize, 0o755
	}
	if hdr.Size < 0 || hdr.Size > limit {
		return nil, fmt.Errorf("entry %s is %d bytes, larger than %d; refusing the archive", name, hdr.Size, limit)
	}
	if hdr.Size == 0 && mode == 0o755 {
		// An empty file runs as an empty shell script: it exits 0 and
		// does nothing, so an empty banger could not even roll back.
		return nil, fmt.Errorf("entry %s is empty; a release's binaries never are (a failed build was packed?); refusing the archive", name)
	}
	x.budget.allowed += (hdr.Size + 511) &^ 511
	h := *hdr
	h.Mode = mode
	return &h, nil
}

func (x *archiveFilter) place(name string, _ *tar.Header, _ fs.FileInfo) error {
	x.made = append(x.made, name)
	return nil
}

// removeAll removes the files x made in dir.
func (x *archiveFilter) removeAll(dir string) error {
	if len(x.made) == 0 {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var errs []error
	for _, name := range x.made {
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
