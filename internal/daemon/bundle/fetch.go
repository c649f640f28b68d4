package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"banger/internal/keylock"
	"banger/internal/store"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Source names one bundle: where it is and what it must be.
type Source struct {
	URL    string // http, https or file URL
	SHA256 string // sha256 of the compressed file, 64 hex digits
	Size   int64  // bytes of the compressed file
}

// Progress receives a fetch's progress. The daemon passes its operation's
// progress; Fetch accepts nil. Totals and increments are bytes of the
// compressed stream.
type Progress interface {
	Phase(string)
	SetTotal(n int64, unit store.Unit)
	Add(n int64)
}

// Result says what Fetch did.
type Result struct {
	Dest   string // the directory the bundle is unpacked in
	Cached bool   // dest already held this bundle; nothing was downloaded
	Bytes  int64  // compressed bytes downloaded (0 when Cached)
}

// MarkerName is the file Fetch writes at the top of an unpacked bundle. It
// records which bundle the directory holds, so a later Fetch of the same
// bundle is a no-op. Archives may not contain an entry of this name.
const MarkerName = ".banger-bundle"

// Phases reported to Progress.
const (
	PhaseDownload = "download"
	PhaseSync     = "sync"
	PhaseInstall  = "install"
)

type marker struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	URL    string `json:"url"`
}

// client is used for http and https sources. It has no overall timeout: the
// caller's context governs how long a download may take.
var client = &http.Client{}

// inProcess serialises fetches of one destination inside this process; the
// lock file serialises them between processes.
var inProcess keylock.Map

// Fetch downloads the bundle src into the directory dest.
//
// The compressed stream is checked against src.Size and src.SHA256 as it
// arrives, decompressed and unpacked straight into a temporary directory
// beside dest (".tmp-<base>-<random>" in dest's parent, which is created if
// missing). Only when the whole stream has arrived and matches is the tree
// synced to disk and renamed to dest. On any failure or cancellation the
// temporary directory is removed and dest is left as it was.
//
// If dest already holds this bundle (its marker file records the same
// sha256), Fetch returns at once with Result.Cached set. If dest holds a
// different bundle fetched earlier, it is replaced in one rename. If dest
// exists but was not made by Fetch, Fetch refuses to touch it.
//
// Concurrent calls for the same dest download once: in this process they
// wait on each other; across processes they take an exclusive flock on
// dest+".lock", a file that exists only while a fetch holds it.
//
// Archive entries may be regular files, directories, symlinks and hard
// links. An entry whose path is absolute or contains "..", that would be
// written through a symlink, or a hard link to anything but a regular file
// unpacked earlier, is refused with an error naming it. Symlinks are created
// as they are and never followed. Modes are kept; ownership is kept when
// running as root.
func Fetch(ctx context.Context, src Source, dest string, p Progress) (Result, error) {
	if p == nil {
		p = nopProgress{}
	}
	src, err := checkSource(src)
	if err != nil {
		return Result{}, err
	}
	if dest, err = checkDest(dest); err != nil {
		return Result{}, err
	}

	unlock, err := inProcess.Lock(ctx, dest)
	if err != nil {
		return Result{}, fmt.Errorf("waiting for another fetch into %s: %w", dest, err)
	}
	defer unlock()
	if ok, _ := holds(dest, src.SHA256); ok {
		return Result{Dest: dest, Cached: true}, nil
	}

	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Result{}, fmt.Errorf("creating %s for bundle %s: %w", parent, src.URL, err)
	}
	lockf, err := lockFile(ctx, dest+".lock")
	if err != nil {
		return Result{}, err
	}
	defer lockf.unlock()
	// Another process may have finished while we waited for the lock.
	have, err := holds(dest, src.SHA256)
	if have {
		return Result{Dest: dest, Cached: true}, nil
	}
	if err != nil {
		return Result{}, err
	}
	// dest now either does not exist or holds an older bundle.
	_, statErr := os.Lstat(dest)
	replace := statErr == nil

	tmp, err := os.MkdirTemp(parent, ".tmp-"+filepath.Base(dest)+"-*")
	if err != nil {
		return Result{}, fmt.Errorf("creating a temporary directory beside %s: %w", dest, err)
	}
	// After a plain rename tmp no longer exists; after an exchange it holds
	// the replaced tree. Either way removing it is right.
	defer removeTree(tmp)

	n, err := download(ctx, src, tmp, p)
	if err != nil {
		return Result{}, err
	}

	p.Phase(PhaseSync)
	if err := syncTree(tmp); err != nil {
		return Result{}, fmt.Errorf("syncing unpacked bundle %s in %s: %w", src.URL, tmp, err)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("fetching bundle %s: %w", src.URL, err)
	}

	p.Phase(PhaseInstall)
	if err := install(tmp, dest, replace); err != nil {
		return Result{}, err
	}
	if err := syncDir(parent); err != nil {
		return Result{}, fmt.Errorf("syncing %s after installing bundle %s: %w", parent, src.URL, err)
	}
	return Result{Dest: dest, Bytes: n}, nil
}

// download streams the bundle into dir and verifies it. It returns the
// number of compressed bytes read.
func download(ctx context.Context, src Source, dir string, p Progress) (int64, error) {
	p.Phase(PhaseDownload)
	p.SetTotal(src.Size, store.UnitBytes)
	body, err := open(ctx, src)
	if err != nil {
		return 0, err
	}
	defer body.Close()

	// The record goes in first: the archive may make the top directory
	// read-only, and may not name the record itself. A failed fetch
	// removes the whole directory.
	m, err := json.Marshal(marker{SHA256: src.SHA256, Size: src.Size, URL: src.URL})
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, MarkerName), append(m, '\n'), 0o644); err != nil {
		return 0, fmt.Errorf("writing %s into %s: %w", MarkerName, dir, err)
	}
	// dir stays private (MkdirTemp's 0700) until the stream is verified:
	// the tree holds the archive's setuid files, and its owners as root,
	// before anything says it is the published bundle.

	vr := &verifyReader{ctx: ctx, r: body, h: sha256.New(), size: src.Size, p: p}
	dec, err := zstd.NewReader(vr, zstd.WithDecoderConcurrency(0), zstd.WithDecoderLowmem(false))
	if err != nil {
		return 0, fmt.Errorf("starting zstd decoder for %s: %w", src.URL, err)
	}
	xerr := unpack(ctx, dec, dir, maxUnpacked)
	if xerr == nil {
		// Read past the tar trailer to the end of the zstd stream, so
		// every compressed byte is hashed and the frame checksum checked.
		if _, err := io.Copy(io.Discard, dec); err != nil {
			xerr = fmt.Errorf("decompressing: %w", err)
		}
	}
	dec.Close()

	if err := ctx.Err(); err != nil {
		return vr.n, fmt.Errorf("fetching bundle %s: %w", src.URL, err)
	}
	// Read whatever the decoder left, then judge the stream as a whole. A
	// stream that is short, long or corrupt explains a broken archive better
	// than the archive error does, so it is reported first.
	if verr := vr.finish(); verr != nil {
		return vr.n, verifyError(src, vr, verr)
	}
	if got := hex.EncodeToString(vr.h.Sum(nil)); got != src.SHA256 {
		return vr.n, fmt.Errorf("bundle %s failed verification: its sha256 is %s but the catalog expects %s; the file at that URL is damaged or is not the published bundle, so nothing was installed", src.URL, got, src.SHA256)
	}
	if xerr != nil {
		return vr.n, fmt.Errorf("unpacking bundle %s: %w", src.URL, xerr)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return vr.n, err
	}
	return vr.n, nil
}

func verifyError(src Source, vr *verifyReader, err error) error {
	switch {
	case errors.Is(err, errTooLong):
		return fmt.Errorf("bundle %s is longer than the %d bytes the catalog gives; the catalog entry or the file at that URL is wrong, so nothing was installed", src.URL, src.Size)
	case errors.Is(err, errShort):
		return fmt.Errorf("bundle %s ended after %d of %d bytes; the transfer was cut short or the file is incomplete, try again", src.URL, vr.n, src.Size)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("bundle %s ended after %d of %d bytes (the connection closed early); try again", src.URL, vr.n, src.Size)
	}
	return fmt.Errorf("reading bundle %s after %d of %d bytes: %w", src.URL, vr.n, src.Size, err)
}

// open starts reading the compressed stream and checks its announced size.
func open(ctx context.Context, src Source) (io.ReadCloser, error) {
	u, err := url.Parse(src.URL)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(u.Scheme, "file") {
		f, err := os.Open(u.Path)
		if err != nil {
			return nil, fmt.Errorf("opening bundle %s: %w", src.URL, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("opening bundle %s: %w", src.URL, err)
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("bundle %s is not a regular file", src.URL)
		}
		if fi.Size() != src.Size {
			f.Close()
			return nil, fmt.Errorf("bundle %s is %d bytes but the catalog says %d; the catalog entry or the file is wrong", src.URL, fi.Size(), src.Size)
		}
		return f, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching bundle %s: %w", src.URL, err)
	}
	// Ask for the bytes as published, so the sha256 is of what we read.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching bundle: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching bundle %s: the server answered %s", src.URL, resp.Status)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != src.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching bundle %s: the server says it is %d bytes but the catalog says %d; the catalog entry or the file on the server is wrong", src.URL, resp.ContentLength, src.Size)
	}
	return resp.Body, nil
}

var (
	errTooLong = errors.New("stream longer than expected")
	errShort   = errors.New("stream shorter than expected")
	errHandoff = errors.New("bundle stream already handed back from the decoder")
)

// verifyReader counts, hashes and reports the compressed stream as it is
// read, and stops the stream as soon as it is longer than expected. The zstd
// decoder reads it from its own goroutine; finish takes it back.
type verifyReader struct {
	ctx  context.Context
	r    io.Reader
	h    hash.Hash
	size int64
	p    Progress

	mu   sync.Mutex
	n    int64
	err  error // first error seen; sticky
	done bool  // finish has taken over
}

func (v *verifyReader) Read(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.done {
		return 0, errHandoff
	}
	return v.read(b)
}

func (v *verifyReader) read(b []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if err := v.ctx.Err(); err != nil {
		v.err = err
		return 0, err
	}
	// Read at most one byte past the expected size, to notice a long stream.
	if rest := v.size - v.n + 1; int64(len(b)) > rest {
		b = b[:rest]
	}
	n, err := v.r.Read(b)
	if n > 0 {
		v.h.Write(b[:n])
		v.n += int64(n)
		v.p.Add(int64(n))
		if v.n > v.size {
			v.err = errTooLong
			return n, v.err
		}
	}
	switch {
	case err == io.EOF && v.n < v.size:
		v.err = errShort
	case err != nil && err != io.EOF:
		v.err = err
	}
	return n, err
}

// finish reads the stream to its end (nothing more is decompressed) and
// returns the first error the stream itself produced: a short or long
// stream, a network error or cancellation. A clean end gives nil.
func (v *verifyReader) finish() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.done = true
	buf := make([]byte, 256<<10)
	for v.err == nil {
		if _, err := v.read(buf); err != nil && v.err == nil {
			// A clean io.EOF at the expected size.
			return nil
		}
	}
	return v.err
}

// checkSource rejects a Source that could never be fetched, before anything
// is touched.
func checkSource(src Source) (Source, error) {
	u, err := url.Parse(src.URL)
	if err != nil {
		return src, fmt.Errorf("bundle URL %q does not parse: %v", src.URL, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return src, fmt.Errorf("bundle URL %q has no host", src.URL)
		}
	case "file":
		if (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
			return src, fmt.Errorf("bundle URL %q: a file URL needs an absolute path and no host, e.g. file:///srv/bundles/x.tar.zst", src.URL)
		}
	default:
		return src, fmt.Errorf("bundle URL %q: only http, https and file URLs can be fetched", src.URL)
	}
	src.SHA256 = strings.ToLower(src.SHA256)
	if len(src.SHA256) != sha256.Size*2 {
		return src, fmt.Errorf("bundle %s: sha256 %q is not 64 hex digits", src.URL, src.SHA256)
	}
	if _, err := hex.DecodeString(src.SHA256); err != nil {
		return src, fmt.Errorf("bundle %s: sha256 %q is not 64 hex digits", src.URL, src.SHA256)
	}
	if src.Size <= 0 {
		return src, fmt.Errorf("bundle %s: size %d must be greater than zero", src.URL, src.Size)
	}
	return src, nil
}

func checkDest(dest string) (string, error) {
	if dest == "" {
		return "", errors.New("bundle destination is empty")
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return "", fmt.Errorf("bundle destination %q: %w", dest, err)
	}
	if filepath.Dir(abs) == abs {
		return "", fmt.Errorf("bundle destination %q is a filesystem root; give a directory to create", dest)
	}
	return abs, nil
}

// holds reports whether dest is a directory whose marker records the bundle
// with the given sha256. It returns an error when dest exists but was not
// made by Fetch, because Fetch will not replace it.
func holds(dest, sum string) (bool, error) {
	fi, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking bundle destination %s: %w", dest, err)
	}
	foreign := fmt.Errorf("%s already exists and was not unpacked from a bundle by banger; move it away or remove it, then try again", dest)
	if !fi.IsDir() {
		return false, foreign
	}
	data, err := os.ReadFile(filepath.Join(dest, MarkerName))
	if err != nil {
		return false, foreign
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil || m.SHA256 == "" {
		return false, foreign
	}
	return m.SHA256 == sum, nil
}

// install moves the finished tree at tmp to dest. When dest exists (an older
// bundle) the two are exchanged atomically where the kernel allows it, so
// dest is never missing; the old tree ends up at tmp.
func install(tmp, dest string, replace bool) error {
	if !replace {
		if err := os.Rename(tmp, dest); err != nil {
			return fmt.Errorf("moving the unpacked bundle into place at %s: %w", dest, err)
		}
		return nil
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dest, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("replacing %s with the new bundle: %w", dest, err)
	}
	// No RENAME_EXCHANGE here: move the old tree aside, then the new in.
	old, err := os.MkdirTemp(filepath.Dir(dest), ".old-"+filepath.Base(dest)+"-*")
	if err != nil {
		return fmt.Errorf("replacing %s with the new bundle: %w", dest, err)
	}
	if err := os.Remove(old); err != nil {
		return fmt.Errorf("replacing %s with the new bundle: %w", dest, err)
	}
	if err := os.Rename(dest, old); err != nil {
		return fmt.Errorf("moving the old bundle at %s aside: %w", dest, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		if rerr := os.Rename(old, dest); rerr != nil {
			return fmt.Errorf("moving the new bundle into place at %s: %w (and the old one could not be put back from %s: %v)", dest, err, old, rerr)
		}
		return fmt.Errorf("moving the new bundle into place at %s: %w", dest, err)
	}
	return os.Rename(old, tmp)
}

// syncTree flushes everything written under dir to disk: one syncfs for the
// filesystem rather than an fsync per file.
func syncTree(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// removeTree removes dir and everything in it, making directories writable
// first if a plain removal fails (an unpacked tree may hold read-only
// directories when not running as root).
func removeTree(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

type nopProgress struct{}

func (nopProgress) Phase(string)               {}
func (nopProgress) SetTotal(int64, store.Unit) {}
func (nopProgress) Add(int64)                  {}
