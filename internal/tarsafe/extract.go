package tarsafe

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// Replace says what an entry may replace in the destination.
type Replace int

const (
	// ReplaceNothing refuses an entry whose name exists and was not made
	// by this extraction, with *ExistsError.
	ReplaceNothing Replace = iota
	// ReplaceFiles lets entries replace existing files, symlinks and
	// other non-directories (each atomically: written under a temporary
	// name and renamed over the old one, so a failed write leaves the old
	// one whole; a symlink is replaced, never followed) and merge into
	// existing directories, whose attributes are then set from the
	// stream. A directory is never replaced by something else.
	ReplaceFiles
	// ReplaceAll is ReplaceFiles, and an entry may also replace a
	// directory, with everything under it, as a later image layer does.
	ReplaceAll
)

// Special says what becomes of character and block devices and FIFOs.
type Special int

const (
	// SpecialRefuse fails the extraction on such an entry.
	SpecialRefuse Special = iota
	// SpecialSkip skips such an entry and tells Options.Skip about it.
	SpecialSkip
	// SpecialMake creates them (devices need root). Hard links may then
	// name any entry but a directory, as in a root filesystem.
	SpecialMake
)

// Options are an extraction's policy. The zero value is the strict one,
// for a stream from a party that is not trusted: nothing existing is
// replaced, absolute names are refused, setuid and setgid bits are
// dropped, owners and xattrs are not applied, devices and FIFOs are
// refused, and names starting ".wh." are plain files.
type Options struct {
	// Top, when set, is the only name the stream may create in the
	// destination: every entry must be Top or lie under Top/, or the
	// extraction fails with an *EscapeError naming it. With
	// ReplaceNothing, Top must not exist beforehand, and when the
	// extraction fails everything it created under Top is removed.
	Top string
	// Replace is what entries may replace; see Replace.
	Replace Replace
	// RootedNames takes an absolute name as relative to the destination
	// ("/etc/x" is "etc/x", "/" is "."), as image layers and packages
	// mean them; without it absolute names are refused.
	RootedNames bool
	// Owners applies each entry's uid and gid. Only root can.
	Owners bool
	// KeepSetid keeps the setuid and setgid bits; without it they are
	// dropped.
	KeepSetid bool
	// Umask is cleared from every entry's permission bits.
	Umask fs.FileMode
	// Special is what devices and FIFOs become; see Special.
	Special Special
	// Xattrs applies the SCHILY.xattr PAX records of entries; those the
	// destination's filesystem refuses are told to Skip.
	Xattrs bool
	// Whiteouts applies OCI whiteouts: an entry ".wh.NAME" removes NAME,
	// ".wh..wh..opq" removes what its directory held before this stream
	// (keeping what the stream put there), and other ".wh..wh." names
	// are ignored. None of them is created.
	Whiteouts bool
	// ContainSymlinks refuses a symlink whose target is absolute, has a
	// ".." after a name (which climbs from wherever that name leads) or,
	// read from the symlink's directory, leaves the destination, for
	// trees the caller will read following symlinks. It holds while no
	// directory is replaced, so not with ReplaceAll or Whiteouts.
	ContainSymlinks bool
	// Holes makes every run of zero blocks in a regular file a hole.
	// Without it only the holes of PAX sparse entries stay holes.
	Holes bool
	// Skip, when set, is told about each entry or attribute not made:
	// devices and FIFOs under SpecialSkip (which then needs it) and
	// xattrs the filesystem refused. An entry of a type not named here
	// fails the extraction; a Filter may skip it first.
	Skip func(name, what string)
	// Filter, when set, sees each entry's header before anything is done
	// with it and returns the header to extract (the same one or a
	// changed copy: another name, link target or mode), nil to skip the
	// entry, or an error to fail the extraction. Hard link targets are
	// passed through Filter too (as a TypeReg header with the target as
	// its Name); one it skips is refused.
	Filter func(hdr *tar.Header) (*tar.Header, error)
	// Placed, when set, is called once an entry is in place with its
	// clean name, the header as it came in the stream, and its Lstat. It
	// is called too, with a nil header, for each parent directory the
	// extraction made, and its error fails the extraction.
	Placed func(name string, hdr *tar.Header, fi fs.FileInfo) error
	// Limits, when set, bound the stream; a *Limits shared by several
	// Extract calls bounds them together.
	Limits *Limits
	// MaxTrailer, when positive, makes Extract read r to its end after
	// the end-of-archive marker and fail if more than MaxTrailer bytes
	// follow it (a tar writer pads to its record size; more is not the
	// end of a tar stream). When 0, the caller reads on.
	MaxTrailer int64
}

// Limits bound what streams may hold. Zero fields are no bound. The
// counts of what was seen live in the Limits, so one *Limits passed to
// several Extract calls (the layers of one image) bounds their sum.
type Limits struct {
	Entries   int64 // entries of every type
	NameBytes int64 // bytes of entry names, summed
	FileBytes int64 // bytes of regular files' contents, summed

	entries, nameBytes, fileBytes, sparseBytes int64
}

// maxSparseBytes bounds the sizes of an extraction's sparse entries
// (with a shared *Limits, of all the extractions that share it), whatever
// the Limits say. archive/tar makes a hole's zeros up as they are read, a
// few bytes of sparse map can claim any size, and the extractor has to
// read the zeros to find the data after them: without a bound a tiny
// stream keeps it busy for ever. No packer of banger writes sparse
// entries (nor do image builders); 16 GiB take a few seconds.
const maxSparseBytes = 16 << 30

// LimitError reports a stream over one of its Limits, or over the bound
// on sparse entries. What is "entries", "name bytes", "file bytes" or
// "sparse bytes".
type LimitError struct {
	What  string
	Limit int64
}

func (e *LimitError) Error() string {
	switch e.What {
	case "entries":
		return fmt.Sprintf("the stream holds more than %d entries; refusing the rest", e.Limit)
	case "name bytes":
		return fmt.Sprintf("the names of the stream's entries add up to more than %d bytes; refusing the rest", e.Limit)
	case "sparse bytes":
		return fmt.Sprintf("the stream's sparse files claim more than %d bytes in all, mostly holes it does not carry; refusing the rest", e.Limit)
	}
	return fmt.Sprintf("the files of the stream would exceed %d bytes in all; refusing the rest", e.Limit)
}

// EscapeError reports a tar entry that would be written outside the
// destination directory: an absolute name, a ".." component, a path that
// passes through a symlink, a name outside Options.Top, or a link target
// that leaves the destination.
type EscapeError struct {
	Name   string
	Reason string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("refusing tar entry %q: %s", e.Name, e.Reason)
}

// ExistsError reports an entry whose name already exists in the
// destination and was not made by this extraction, under ReplaceNothing.
type ExistsError struct {
	Name string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("refusing tar entry %q: something of that name already exists, and this copy replaces nothing", e.Name)
}

// FileSource is a tar stream that can move its bytes into a file without
// handing them to the caller, for example with splice(2) from a socket.
// ReadToFile moves at most n bytes, and at least one, of the stream into f
// at its current offset, exactly as if they were read with Read and written
// to f, and returns how many it moved; at the end of the stream it returns
// io.EOF as Read does.
type FileSource interface {
	io.Reader
	ReadToFile(f *os.File, n int) (int, error)
}

// maxNameLen bounds an entry's name and link target (Linux's PATH_MAX).
const maxNameLen = 4096

// maxDirBytes bounds the names of the directories Extract keeps in memory
// (to set their attributes at the end), so that a stream of millions of
// directories cannot exhaust memory.
const maxDirBytes = 64 << 20

// Extract unpacks the tar stream r into the existing directory dir, as
// opts allows. Regular files, directories, symlinks and hard links (and,
// by opts, devices and FIFOs) are created with the permissions and times
// of their entries. Entries that would escape dir (or Options.Top) are
// refused with *EscapeError, entries that would replace what exists with
// *ExistsError, and nothing is ever written outside dir. Directory
// attributes are applied at the end so a read-only directory can still be
// filled. A regular file whose contents could not be written in full is
// removed. If r is a FileSource, the contents of regular files that are
// not sparse go to the files with its ReadToFile.
func Extract(ctx context.Context, r io.Reader, dir string, opts Options) (err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	defer root.Close()
	src := &divertReader{r: r}
	src.fs, _ = r.(FileSource)
	x := &extractor{ctx: ctx, root: root, opts: opts, safe: map[string]bool{".": true}, made: map[string]int{}, src: src}
	defer x.closeAt()
	if opts.Whiteouts {
		x.layer = map[string]bool{}
	}
	if opts.Top != "" {
		if err := x.checkTop(); err != nil {
			return fmt.Errorf("extract into %s: %w", dir, err)
		}
		if opts.Replace == ReplaceNothing {
			defer func() {
				if err != nil && x.madeTop {
					if cerr := x.removeTop(); cerr != nil {
						err = fmt.Errorf("%w; removing what this copy made in %s also failed: %v", err, path.Join(dir, opts.Top), cerr)
					}
				}
			}()
		}
	}
	if err := x.run(tar.NewReader(src)); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if err := x.trailer(); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if err := x.finishDirs(); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	return nil
}

// checkTop refuses a Top that is not one name, or one that exists when
// nothing may be replaced.
func (x *extractor) checkTop() error {
	top := x.opts.Top
	if top != path.Clean(top) || strings.Contains(top, "/") || top == "." || top == ".." {
		return fmt.Errorf("%q is not a single name", top)
	}
	if x.opts.Replace != ReplaceNothing {
		return nil
	}
	if _, err := x.root.Lstat(top); err == nil {
		return &ExistsError{Name: top}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// run extracts every entry of tr.
func (x *extractor) run(tr *tar.Reader) error {
	for {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar stream: %w", err)
		}
		if err := x.count(hdr); err != nil {
			return err
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

// count charges one entry against the limits, before anything about it
// is kept.
func (x *extractor) count(hdr *tar.Header) error {
	l := x.opts.Limits
	if l == nil {
		return nil
	}
	l.entries++
	l.nameBytes += int64(len(hdr.Name))
	if l.Entries > 0 && l.entries > l.Entries {
		return &LimitError{What: "entries", Limit: l.Entries}
	}
	if l.NameBytes > 0 && l.nameBytes > l.NameBytes {
		return &LimitError{What: "name bytes", Limit: l.NameBytes}
	}
	return nil
}

// countFile charges a regular file's size against the limits and, when
// it is sparse, against maxSparseBytes.
func (x *extractor) countFile(raw string, hdr *tar.Header) error {
	size := hdr.Size
	if sparse(hdr) {
		l := x.opts.Limits
		if l == nil {
			l = &x.sparse
		}
		if size < 0 || size > maxSparseBytes-l.sparseBytes {
			return fmt.Errorf("tar entry %q: %w", raw, &LimitError{What: "sparse bytes", Limit: maxSparseBytes})
		}
		l.sparseBytes += size
	}
	l := x.opts.Limits
	if l == nil || l.FileBytes <= 0 {
		return nil
	}
	if size < 0 || size > l.FileBytes-l.fileBytes {
		return fmt.Errorf("tar entry %q: %w", raw, &LimitError{What: "file bytes", Limit: l.FileBytes})
	}
	l.fileBytes += size
	return nil
}

// trailer reads what follows the end-of-archive marker, as
// Options.MaxTrailer asks.
func (x *extractor) trailer() error {
	if x.opts.MaxTrailer <= 0 {
		return nil
	}
	n, err := io.Copy(io.Discard, io.LimitReader(x.src, x.opts.MaxTrailer+1))
	if err != nil {
		return fmt.Errorf("reading past the tar stream's end: %w", err)
	}
	if n > x.opts.MaxTrailer {
		return fmt.Errorf("more than %d bytes follow the tar stream's end; the stream is not a tar archive of what was asked", x.opts.MaxTrailer)
	}
	return nil
}

type extractor struct {
	ctx  context.Context
	root *os.Root
	opts Options
	// safe holds directories known to be real directories (not symlinks)
	// inside the root. It is a cache, emptied when it grows large.
	safe map[string]bool
	// made holds the directories this extraction created (and, with
	// Replace, the existing ones the stream names), each with its index
	// in dirs, or -1 while no entry for it has come.
	made     map[string]int
	dirs     []dirAttrs
	dirBytes int
	madeTop  bool
	buf      []byte // file copies
	src      *divertReader
	// layer, with Options.Whiteouts, holds the names this stream put in
	// place (true) and their ancestors (false), which an opaque
	// whiteout keeps.
	layer map[string]bool
	// opaqued, with Options.Whiteouts, holds the directories an opaque
	// whiteout has cleared of what was there before the stream.
	opaqued map[string]bool
	// atName and atDir cache the directory last opened for a *at call.
	atName string
	atDir  *os.File
	// sparse counts sparse bytes when Options.Limits is nil.
	sparse Limits
}

// dirAttrs is what finishDirs applies to a directory.
type dirAttrs struct {
	name         string
	mode         fs.FileMode
	uid, gid     int
	atime, mtime time.Time
}
