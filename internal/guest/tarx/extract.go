package tarx

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"path"

	"banger/internal/tarsafe"
)

// Options tune Extract. The zero value is the strict one, for streams
// from a party that is not trusted (a guest answering a copy-out): nothing
// existing is replaced, setuid and setgid bits are dropped, owners are not
// applied, and devices and FIFOs are refused.
type Options struct {
	// Top, when set, is the only name the stream may create in the
	// destination: every entry must be Top or lie under Top/. An entry
	// named otherwise fails the extraction with an *EscapeError naming it.
	// Without Replace, Top must not exist beforehand, and when the
	// extraction fails everything it created under Top is removed.
	Top string
	// Replace lets entries replace existing files and symlinks (each
	// atomically: a new file is written under a temporary name and renamed
	// over the old one, so a failed copy leaves the old one whole; a
	// symlink is replaced, never followed) and merge into existing
	// directories, whose attributes are then set from the stream. Without
	// it, an entry whose name exists and was not made by this extraction
	// is refused.
	Replace bool
	// Chown applies each entry's uid and gid. Only root can do this; pass
	// os.Geteuid() == 0.
	Chown bool
	// KeepSetid keeps the setuid and setgid bits of entries; without it
	// they are dropped.
	KeepSetid bool
	// Umask is cleared from every entry's permission bits (for a copy
	// that does not keep modes: pass the process's umask).
	Umask fs.FileMode
	// Skip, when set, is told about each device, FIFO or socket entry,
	// which is then skipped instead of failing the extraction. Such
	// entries are never created.
	Skip func(name, what string)
	// MaxEntries bounds the number of entries in the stream; 0 means no
	// bound. Beyond it the extraction fails.
	MaxEntries int
	// MaxTrailer, when positive, makes Extract read r to its end after the
	// tar stream's end-of-archive marker, and fail if more than
	// MaxTrailer bytes follow it (a tar writer pads to its record size;
	// more is not the end of a tar stream). When 0, the caller reads on.
	MaxTrailer int64
}

// The errors and the fast source of the one extractor, under the names
// the copy code has always used.
type (
	EscapeError = tarsafe.EscapeError
	ExistsError = tarsafe.ExistsError
	FileSource  = tarsafe.FileSource
)

// Extract unpacks the tar stream r into the existing directory dir with
// tarsafe.Extract, under the copy policy of opts. Regular files,
// directories, symlinks and hard links are created with the permissions
// and modification times of their entries, as opts allows; holes of
// sparse entries stay holes. Entries that would escape dir (or
// Options.Top) are refused with *EscapeError, entries that would replace
// what exists with *ExistsError (unless Options.Replace), and nothing is
// ever written outside dir. If r is a FileSource, the contents of regular
// files go to the files with its ReadToFile.
func Extract(ctx context.Context, r io.Reader, dir string, opts Options) error {
	return tarsafe.Extract(ctx, r, dir, opts.policy())
}

// policy is opts as the extractor's options.
func (opts Options) policy() tarsafe.Options {
	p := tarsafe.Options{
		Top:        opts.Top,
		Owners:     opts.Chown,
		KeepSetid:  opts.KeepSetid,
		Umask:      opts.Umask,
		Skip:       opts.Skip,
		MaxTrailer: opts.MaxTrailer,
	}
	if opts.Replace {
		p.Replace = tarsafe.ReplaceFiles
	}
	if opts.Skip != nil {
		p.Special = tarsafe.SpecialSkip
	}
	if opts.MaxEntries > 0 {
		p.Limits = &tarsafe.Limits{Entries: int64(opts.MaxEntries)}
	}
	if opts.Replace && opts.Top == "" {
		// A copy never changes the destination directory itself: a
		// "./" entry (tar c . makes one) is passed over, as it always
		// was, rather than setting its attributes.
		p.Filter = skipDot
	}
	return p
}

// skipDot skips a directory entry that names the destination itself.
func skipDot(hdr *tar.Header) (*tar.Header, error) {
	if hdr.Typeflag == tar.TypeDir && !path.IsAbs(hdr.Name) && path.Clean(hdr.Name) == "." {
		return nil, nil
	}
	return hdr, nil
}
