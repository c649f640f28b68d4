package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// copyBufSize is the unit in which file data is moved; holeBlock is the
// granularity at which runs of zeros become holes in the written file, so a
// mostly empty disk image stays sparse.
const (
	copyBufSize = 1 << 20
	holeBlock   = 4 << 10
)

// maxUnpacked bounds the total size of the files in one bundle. The archive
// is unpacked before its digest can be checked, so without a bound a small
// hostile stream (sparse headers, or a zstd run of zeros) could make the
// extractor grind through an endless file.
const maxUnpacked = 1 << 40

var zeroBlock = make([]byte, holeBlock)

// extractor unpacks a tar stream beneath one directory. Every file operation
// goes through an os.Root, so nothing can land outside the directory even if
// a check here were wrong; on top of that, entries are refused when they are
// absolute, contain "..", or would be written through a symlink.
type extractor struct {
	root   *os.Root
	dirs   map[string]bool // directories known to be real directories
	meta   []dirMeta       // directory modes and times, applied last
	asRoot bool
	buf    []byte
	ctx    context.Context
	total  int64 // bytes of file data so far
	limit  int64 // bound on total
}

type dirMeta struct {
	name     string
	mode     fs.FileMode
	uid, gid int
	mtime    time.Time
}

func newExtractor(dir string) (*extractor, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s to unpack into: %w", dir, err)
	}
	return &extractor{
		root:   root,
		dirs:   map[string]bool{".": true},
		asRoot: os.Geteuid() == 0,
		buf:    make([]byte, copyBufSize),
		ctx:    context.Background(),
		limit:  maxUnpacked,
	}, nil
}

func (x *extractor) close() { x.root.Close() }

// run unpacks every entry of the tar stream r. Directory modes and times are
// left for finish, so directories stay writable while entries land in them.
func (x *extractor) run(ctx context.Context, r io.Reader) error {
	x.ctx = ctx
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return fmt.Errorf("archive entry %q: %s entries are not allowed in a bundle (only files, directories, symlinks and hard links)", hdr.Name, typeName(hdr.Typeflag))
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("archive entry %q: %v", hdr.Name, err)
	}
	if name == MarkerName {
		return fmt.Errorf("archive entry %q: the name %s is reserved for banger's own record of the bundle", hdr.Name, MarkerName)
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("archive entry %q: only a directory may name the top of the bundle", hdr.Name)
		}
		x.meta = append(x.meta, x.dirMetaOf(".", hdr))
		return nil
	}
	if err := x.parents(hdr.Name, name, true); err != nil {
		return err
	}
	// A later entry of the same name replaces an earlier file or link; a
	// directory is never replaced.
	fi, err := x.root.Lstat(name)
	switch {
	case err == nil && fi.IsDir():
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("archive entry %q would replace a directory of the same name", hdr.Name)
		}
	case err == nil:
		if err := x.root.Remove(name); err != nil {
			return fmt.Errorf("archive entry %q: replacing the earlier entry: %w", hdr.Name, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		x.dirs[name] = true
		x.meta = append(x.meta, x.dirMetaOf(name, hdr))
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := x.file(hdr, name, r); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("archive entry %q: symlink with an empty target", hdr.Name)
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		if x.asRoot {
			if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
		}
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "." || target == MarkerName {
			return fmt.Errorf("archive entry %q: hard link target %q is not a path inside the bundle", hdr.Name, hdr.Linkname)
		}
		if err := x.parents(hdr.Name, target, false); err != nil {
			return err
		}
		fi, err := x.root.Lstat(target)
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("archive entry %q: hard link target %q is not a regular file unpacked earlier", hdr.Name, hdr.Linkname)
		}
		if err := x.root.Link(target, name); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
	}
	return nil
}

// file writes one regular file, keeping runs of zeros as holes.
func (x *extractor) file(hdr *tar.Header, name string, r io.Reader) error {
	if hdr.Size < 0 || hdr.Size > x.limit-x.total {
		return fmt.Errorf("the files in the bundle would exceed %d bytes in all; this is not a bundle banger can use", x.limit)
	}
	x.total += hdr.Size
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	werr := x.copySparse(f, r, hdr.Size)
	if werr == nil && x.asRoot {
		// Before chmod: chown clears the set-id bits.
		werr = f.Chown(hdr.Uid, hdr.Gid)
	}
	if werr == nil {
		werr = f.Chmod(modeOf(hdr))
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	return x.root.Chtimes(name, hdr.ModTime, hdr.ModTime)
}

func (x *extractor) copySparse(f *os.File, r io.Reader, size int64) error {
	var off, end int64 // end: just past the last byte written
	for off < size {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		n := int64(len(x.buf))
		if rest := size - off; rest < n {
			n = rest
		}
		chunk := x.buf[:n]
		if _, err := io.ReadFull(r, chunk); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading file data: %w", err)
		}
		// Write each run of non-zero blocks in one call; skip zero blocks.
		for i := 0; i < len(chunk); {
			j := i
			for j < len(chunk) && !isZero(chunk[j:min(j+holeBlock, len(chunk))]) {
				j = min(j+holeBlock, len(chunk))
			}
			if j > i {
				if _, err := f.WriteAt(chunk[i:j], off+int64(i)); err != nil {
					return err
				}
				end = off + int64(j)
			}
			for j < len(chunk) && isZero(chunk[j:min(j+holeBlock, len(chunk))]) {
				j = min(j+holeBlock, len(chunk))
			}
			i = j
		}
		off += n
	}
	if end < size {
		return f.Truncate(size)
	}
	return nil
}

func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// parents makes sure every directory above name is a real directory inside
// the root, creating missing ones when create is set. A symlink or file in
// the way is refused: the archive would otherwise write through it.
func (x *extractor) parents(entry, name string, create bool) error {
	dir := path.Dir(name)
	if x.dirs[dir] {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if x.dirs[p] {
			continue
		}
		fi, err := x.root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := x.root.Mkdir(p, 0o755); err != nil {
				return fmt.Errorf("archive entry %q: creating %s: %w", entry, p, err)
			}
		case err != nil:
			return fmt.Errorf("archive entry %q: %s: %w", entry, p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("archive entry %q goes through the symlink %q; bundles may not write through symlinks", entry, p)
		case !fi.IsDir():
			return fmt.Errorf("archive entry %q: %q is not a directory", entry, p)
		}
		x.dirs[p] = true
	}
	return nil
}

func (x *extractor) dirMetaOf(name string, hdr *tar.Header) dirMeta {
	return dirMeta{name: name, mode: modeOf(hdr), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
}

// finish applies directory ownership, modes and times, deepest first, so
// that tightening a parent cannot block work on its children.
func (x *extractor) finish() error {
	hasTop := false
	for _, m := range x.meta {
		if m.name == "." {
			hasTop = true
		}
	}
	if !hasTop {
		if err := x.root.Chmod(".", 0o755); err != nil {
			return err
		}
	}
	sort.SliceStable(x.meta, func(i, j int) bool {
		return strings.Count(x.meta[i].name, "/") > strings.Count(x.meta[j].name, "/")
	})
	for _, m := range x.meta {
		if x.asRoot {
			if err := x.root.Lchown(m.name, m.uid, m.gid); err != nil {
				return fmt.Errorf("setting owner of %s: %w", m.name, err)
			}
		}
		if err := x.root.Chmod(m.name, m.mode); err != nil {
			return fmt.Errorf("setting mode of %s: %w", m.name, err)
		}
		if !m.mtime.IsZero() {
			if err := x.root.Chtimes(m.name, m.mtime, m.mtime); err != nil {
				return fmt.Errorf("setting times of %s: %w", m.name, err)
			}
		}
	}
	return nil
}

// cleanName turns an archive path into a clean relative path, refusing
// absolute paths and any ".." component.
func cleanName(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty path")
	}
	if strings.HasPrefix(s, "/") {
		return "", errors.New("absolute paths are not allowed")
	}
	if strings.ContainsRune(s, 0) {
		return "", errors.New("path contains a NUL byte")
	}
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return "", errors.New(`".." is not allowed in paths`)
		}
	}
	return path.Clean(s), nil
}

func modeOf(hdr *tar.Header) fs.FileMode {
	m := fs.FileMode(hdr.Mode) & fs.ModePerm
	if hdr.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeCont:
		return "contiguous file"
	}
	return fmt.Sprintf("type %q", t)
}
