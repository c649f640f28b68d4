package bundle

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"

	"banger/internal/tarsafe"
)

// copyBufSize is the unit in which Pack moves file data.
const copyBufSize = 1 << 20

// maxUnpacked bounds the total size of the files in one bundle. The archive
// is unpacked before its digest can be checked, so without a bound a small
// hostile stream (sparse headers, or a zstd run of zeros) could make the
// extractor grind through an endless file.
const maxUnpacked = 1 << 40

// unpack extracts the bundle's tar stream r into dir, a fresh directory,
// with the one extractor (internal/tarsafe): files (runs of zeros become
// holes, so a mostly empty disk image stays sparse), directories, symlinks
// and hard links, with their modes (setid bits included) and, as root,
// their owners. A later entry of a name replaces an earlier file or link,
// never a directory. Devices, FIFOs, absolute names, names through
// symlinks and MarkerName are refused, and an entry naming dir itself is
// passed over; the files' sizes may add up to limit bytes.
func unpack(ctx context.Context, r io.Reader, dir string, limit int64) error {
	return tarsafe.Extract(ctx, r, dir, tarsafe.Options{
		Replace:   tarsafe.ReplaceFiles,
		Owners:    os.Geteuid() == 0,
		KeepSetid: true,
		Holes:     true,
		Filter:    refuseMarker,
		Limits:    &tarsafe.Limits{FileBytes: limit},
	})
}

// refuseMarker refuses an entry, or a hard link target, named MarkerName:
// the name is banger's own record of the bundle. It passes over a
// directory entry naming the top directory itself (Pack writes none): the
// top stays private until the stream is verified, and then gets 0755.
func refuseMarker(hdr *tar.Header) (*tar.Header, error) {
	if hdr.Typeflag == tar.TypeDir && !path.IsAbs(hdr.Name) && path.Clean(hdr.Name) == "." {
		return nil, nil
	}
	if path.Clean(hdr.Name) == MarkerName {
		return nil, fmt.Errorf("archive entry %q: the name %s is reserved for banger's own record of the bundle", hdr.Name, MarkerName)
	}
	return hdr, nil
}
