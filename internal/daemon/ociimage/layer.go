package ociimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"banger/internal/tarsafe"

	"golang.org/x/sys/unix"
)

// xattrPAXPrefix starts the PAX records that carry extended attributes.
const xattrPAXPrefix = "SCHILY.xattr."

// ApplyLayer applies one uncompressed layer tar stream onto root, the way an
// overlay of the layers would look: entries in order, ".wh.NAME" deletes NAME,
// ".wh..wh..opq" hides the lower contents of its directory. Entries that would
// land outside root (".." components, writes through a symlinked parent,
// hardlinks to outside or through a symlink) are refused with an error naming
// layerName and the entry. xattrs the tree's filesystem cannot hold are
// skipped. Run by a user, it leaves owners, modes beyond the owner's and
// device nodes out of the tree (device nodes become empty files), since
// only Import can write those into an image.
func ApplyLayer(root string, layer io.Reader, layerName string) error {
	a := newApplier(root, Limits{})
	if os.Geteuid() != 0 {
		a = newRootlessApplier(root, Limits{})
	}
	return a.apply(context.Background(), layer, layerName)
}

// Default bounds on what the applier keeps per entry; see Limits.
const (
	DefaultMaxEntries   = 500_000
	DefaultMaxPathBytes = 64 << 20
)

// Limits bound the state the applier keeps per tar entry, summed over all
// layers of an image, so that a layer of millions of entries cannot exhaust
// memory. Zero fields take the defaults.
type Limits struct {
	// MaxEntries is the most tar entries (files, directories, links,
	// whiteouts) the image may have; the config key is oci_max_entries.
	MaxEntries int64
	// MaxPathBytes is the most bytes all entry names together may have; the
	// config key is oci_max_path_bytes.
	MaxPathBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxPathBytes <= 0 {
		l.MaxPathBytes = DefaultMaxPathBytes
	}
	return l
}

// applier applies layers in order onto one tree, each with the one
// extractor (internal/tarsafe) under an image layer's policy.
type applier struct {
	root     string
	warnings []string
	// rootless: owners, full modes, device nodes and xattrs go to meta
	// (see manifest.go) instead of onto the tree.
	rootless bool
	meta     map[uint64]*inodeMeta
	// bounds is shared by the layers: the limits are the image's.
	bounds *tarsafe.Limits
	// xattrBytes counts the xattr bytes kept in meta; see keep.
	xattrBytes int64
}

func newApplier(root string, l Limits) *applier {
	l = l.withDefaults()
	return &applier{root: root, bounds: &tarsafe.Limits{Entries: l.MaxEntries, NameBytes: l.MaxPathBytes}}
}

// newRootlessApplier makes an applier for a process that cannot set owners
// or make device nodes; see manifest.go.
func newRootlessApplier(root string, l Limits) *applier {
	a := newApplier(root, l)
	a.rootless = true
	a.meta = map[uint64]*inodeMeta{}
	return a
}

func (a *applier) warn(format string, args ...any) {
	if len(a.warnings) < 200 {
		a.warnings = append(a.warnings, fmt.Sprintf(format, args...))
	} else if len(a.warnings) == 200 {
		a.warnings = append(a.warnings, "further warnings suppressed")
	}
}

// apply reads one layer. Absolute names are taken as relative to the
// root, anything but a directory may replace anything, whiteouts apply,
// and, as root, owners, exact modes, device nodes and xattrs are made.
func (a *applier) apply(ctx context.Context, layer io.Reader, layerName string) error {
	opts := tarsafe.Options{
		Replace:     tarsafe.ReplaceAll,
		RootedNames: true,
		Whiteouts:   true,
		Special:     tarsafe.SpecialMake,
		Owners:      !a.rootless,
		KeepSetid:   !a.rootless,
		Xattrs:      !a.rootless,
		Skip: func(name, what string) {
			a.warn("layer %s: %s on %s not kept", layerName, what, name)
		},
		Filter: func(hdr *tar.Header) (*tar.Header, error) { return a.filter(hdr, layerName), nil },
		Limits: a.bounds,
	}
	if a.rootless {
		opts.Placed = func(name string, hdr *tar.Header, fi fs.FileInfo) error {
			return a.record(hdr, fi, layerName)
		}
	}
	err := tarsafe.Extract(ctx, layer, a.root, opts)
	var le *tarsafe.LimitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &le) && le.What == "entries":
		return fmt.Errorf("layer %s: the image has more than %d entries, the limit (oci_max_entries in the configuration; raise it if the image is trusted and you have the memory, about 300 bytes an entry)", layerName, le.Limit)
	case errors.As(err, &le) && le.What == "name bytes":
		return fmt.Errorf("layer %s: the names of the image's entries add up to more than %d bytes, the limit (oci_max_path_bytes in the configuration; raise it if the image is trusted and you have the memory)", layerName, le.Limit)
	case errors.Is(err, fs.ErrPermission) && !a.rootless:
		return fmt.Errorf("layer %s: %w (the import cannot make the image exactly: an owner or device node was refused; if the daemon runs in a user namespace, map the image's ids)", layerName, err)
	}
	return fmt.Errorf("layer %s: %w", layerName, err)
}

// filter skips, with a warning, entries of types an image cannot hold,
// and, without root, gives the tree owner-only modes and device nodes as
// empty placeholder files: what the tree cannot carry is recorded from
// the original header (record).
func (a *applier) filter(hdr *tar.Header, layer string) *tar.Header {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		a.warn("layer %s: skipped entry %s of unsupported tar type %q", layer, hdr.Name, string(hdr.Typeflag))
		return nil
	}
	if !a.rootless {
		return hdr
	}
	h := *hdr
	switch h.Typeflag {
	case tar.TypeDir:
		h.Mode = h.Mode&0o777 | 0o700 // the exact mode is in the manifest
	case tar.TypeChar, tar.TypeBlock:
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, 0, 0o600
	default:
		h.Mode = 0o600
	}
	return &h
}

// record keeps, without root, what the tree cannot carry of the entry hdr
// now in place (fi): its owner, full mode, device numbers and xattrs, by
// inode. A nil hdr is a parent directory the extraction made: root's. A
// hard link shares its target's inode and record.
func (a *applier) record(hdr *tar.Header, fi fs.FileInfo, layer string) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("layer %s: no inode number for %s", layer, fi.Name())
	}
	if hdr == nil {
		a.keepDefault(st)
		return nil
	}
	var typ uint32
	var rdev uint64
	switch hdr.Typeflag {
	case tar.TypeLink:
		return nil
	case tar.TypeDir:
		typ = unix.S_IFDIR
	case tar.TypeSymlink:
		typ = unix.S_IFLNK
	case tar.TypeFifo:
		typ = unix.S_IFIFO
	case tar.TypeChar, tar.TypeBlock:
		typ = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			typ = unix.S_IFBLK
		}
		rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	default:
		typ = unix.S_IFREG
	}
	return a.keep(st, typ, hdr.Uid, hdr.Gid, hdr.Mode, hdr.PAXRecords, rdev, layer, hdr.Name)
}
