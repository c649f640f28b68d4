package kernelprep

import (
	"archive/tar"
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/tarsafe"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxExtractBytes bounds what ReadDeb writes, against hostile packages.
const maxExtractBytes = 8 << 30

// Tree is a kernel package's files on disk: Root holds boot/ and
// lib/modules/.
type Tree struct {
	Root       string // directory holding boot/ and lib/modules/
	Release    string // kernel release, e.g. "6.1.0-56-amd64"
	Kernel     string // boot/vmlinuz-<release> (or boot/vmlinux-<release>)
	ModulesDir string // lib/modules/<release>
}

// OpenTree finds the kernel image and module tree in an extracted kernel
// package (or a root filesystem): boot/vmlinuz-<release> (or vmlinux-) and
// lib/modules/<release> (or usr/lib/modules/<release>). Exactly one release
// must have both.
func OpenTree(root string) (Tree, error) {
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinu[xz]-*"))
	var found []Tree
	seen := map[string]bool{}
	for _, k := range kernels {
		st, err := os.Stat(k)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(filepath.Base(k), "vmlinuz-"), "vmlinux-")
		if seen[rel] {
			continue
		}
		for _, md := range []string{filepath.Join(root, "lib", "modules", rel), filepath.Join(root, "usr", "lib", "modules", rel)} {
			if st, err := os.Stat(md); err == nil && st.IsDir() {
				found = append(found, Tree{Root: root, Release: rel, Kernel: k, ModulesDir: md})
				seen[rel] = true
				break
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Tree{}, fmt.Errorf("no kernel found in %s: expected boot/vmlinuz-<release> and lib/modules/<release>; pass a linux-image .deb or its extracted tree", root)
	default:
		var rels []string
		for _, t := range found {
			rels = append(rels, t.Release)
		}
		return Tree{}, fmt.Errorf("several kernels in %s (%s); pass a tree holding just one", root, strings.Join(rels, ", "))
	}
}

// ReadDeb extracts the kernel image (boot/vmlinuz-*) and the module tree
// (lib/modules/, or usr/lib/modules/ which lands in lib/modules/) from a
// Debian package into dst, which must exist, and returns the tree. Other
// files are skipped. An entry whose path, or whose link target, escapes the
// destination makes the whole package refused.
func ReadDeb(ctx context.Context, debPath, dst string) (Tree, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return Tree{}, fmt.Errorf("opening kernel package: %w", err)
	}
	defer f.Close()
	// A read that waits for data (a pipe, a stalled network filesystem)
	// does not look at ctx: closing the file ends it.
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if err := extractDeb(ctx, bufio.NewReaderSize(f, 1<<20), dst); err != nil {
		if ctx.Err() != nil {
			return Tree{}, fmt.Errorf("%s: %w", debPath, ctx.Err())
		}
		return Tree{}, fmt.Errorf("%s: %w", debPath, err)
	}
	t, err := OpenTree(dst)
	if err != nil {
		return Tree{}, fmt.Errorf("%s: package holds no usable kernel: %w", debPath, err)
	}
	return t, nil
}

func extractDeb(ctx context.Context, r io.Reader, dst string) error {
	sawData := false
	first := true
	err := readAr(r, func(name string, size int64, body io.Reader) error {
		if first {
			first = false
			if name != "debian-binary" {
				return fmt.Errorf("not a Debian package: first member is %q, want debian-binary", name)
			}
			v, err := io.ReadAll(io.LimitReader(body, 64))
			if err != nil {
				return err
			}
			if !strings.HasPrefix(string(v), "2.") {
				return fmt.Errorf("unsupported Debian package format %q", strings.TrimSpace(string(v)))
			}
			return nil
		}
		if !strings.HasPrefix(name, "data.tar") {
			return nil
		}
		if sawData {
			return errors.New("package has two data.tar members")
		}
		sawData = true
		tr, closeFn, err := decompressTar(name, body)
		if err != nil {
			return err
		}
		defer closeFn()
		return extractKernelTar(ctx, tr, dst)
	})
	if err != nil {
		return err
	}
	if first {
		return errors.New("not a Debian package: empty ar archive")
	}
	if !sawData {
		return errors.New("not a Debian package: no data.tar member")
	}
	return nil
}

func decompressTar(name string, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch name {
	case "data.tar":
		return r, nop, nil
	case "data.tar.xz":
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return zr, nop, nil
	case "data.tar.zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return zr, zr.Close, nil
	case "data.tar.gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return zr, nop, nil
	case "data.tar.bz2":
		return bzip2.NewReader(r), nop, nil
	default:
		return nil, nil, fmt.Errorf("unsupported data member %q (want data.tar with xz, zst, gz, bz2 or no compression)", name)
	}
}

// readAr calls fn for each member of a Unix ar archive (the container of a
// .deb). fn may read less than the whole member.
func readAr(r io.Reader, fn func(name string, size int64, body io.Reader) error) error {
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return fmt.Errorf("not an ar archive: %w", noEOF(err))
	}
	if string(magic[:]) != "!<arch>\n" {
		return errors.New("not an ar archive (bad magic); a .deb starts with !<arch>")
	}
	var hdr [60]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("ar: reading member header: %w", noEOF(err))
		}
		if string(hdr[58:60]) != "`\n" {
			return errors.New("ar: corrupt member header")
		}
		name := strings.TrimRight(string(hdr[0:16]), " ")
		name = strings.TrimSuffix(name, "/") // GNU ar style
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("ar: member %q has a bad size field %q", name, strings.TrimSpace(string(hdr[48:58])))
		}
		body := &io.LimitedReader{R: r, N: size}
		if err := fn(name, size, body); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, body); err != nil {
			return fmt.Errorf("ar: member %q: %w", name, err)
		}
		if body.N > 0 {
			return fmt.Errorf("ar: member %q truncated", name)
		}
		if size%2 == 1 {
			var pad [1]byte
			if _, err := io.ReadFull(r, pad[:]); err != nil && err != io.EOF {
				return fmt.Errorf("ar: %w", err)
			}
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// kernelPath maps a data.tar entry name to where it goes under the
// destination, or "" when the entry is not wanted. It fails for a name that
// would leave the destination.
func kernelPath(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	n = strings.TrimLeft(n, "/")
	if n == "" || n == "." {
		return "", nil
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("refusing package entry %q: it escapes the destination", name)
		}
	}
	n = path.Clean(n)
	switch {
	case strings.HasPrefix(n, "usr/lib/modules/"):
		return strings.TrimPrefix(n, "usr/"), nil
	case n == "lib/modules" || n == "usr/lib/modules" || n == "boot" || n == "lib" || n == "usr/lib":
		return "", nil // created as needed
	case strings.HasPrefix(n, "lib/modules/"):
		return n, nil
	case strings.HasPrefix(n, "boot/vmlinuz-") || strings.HasPrefix(n, "boot/vmlinux-"):
		if strings.Contains(strings.TrimPrefix(n, "boot/"), "/") {
			return "", nil
		}
		return n, nil
	}
	return "", nil
}

// extractKernelTar extracts the kernel's files of a data.tar stream into
// dst with the one extractor (internal/tarsafe), kernelPath choosing and
// placing them. Symlinks must stay inside dst (the tree is read following
// them), device nodes and FIFOs are skipped, and an entry that would
// escape makes the whole package refused.
func extractKernelTar(ctx context.Context, r io.Reader, dst string) error {
	err := tarsafe.Extract(ctx, r, dst, tarsafe.Options{
		Replace:         tarsafe.ReplaceFiles,
		Special:         tarsafe.SpecialSkip,
		Skip:            func(string, string) {}, // nothing a kernel package needs
		ContainSymlinks: true,
		Filter:          kernelEntry,
		Limits:          &tarsafe.Limits{FileBytes: maxExtractBytes},
	})
	var esc *tarsafe.EscapeError
	if errors.As(err, &esc) {
		return fmt.Errorf("refusing package entry %q: %s", esc.Name, esc.Reason)
	}
	return err
}

// kernelEntry is extractKernelTar's filter: it takes the entries
// kernelPath wants, under the names it gives, with directories 0755 and
// files at most 0755 but readable and writable by their owner.
func kernelEntry(hdr *tar.Header) (*tar.Header, error) {
	rel, err := kernelPath(hdr.Name)
	if err != nil || rel == "" {
		return nil, err
	}
	h := *hdr
	h.Name = rel
	switch h.Typeflag {
	case tar.TypeDir:
		h.Mode = 0o755
	case tar.TypeReg, tar.TypeGNUSparse:
		h.Mode = h.Mode&0o755 | 0o600
	case tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return nil, nil // nothing a kernel package needs
	}
	return &h, nil
}
