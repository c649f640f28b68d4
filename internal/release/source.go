package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"banger/internal/progress"
)

// Source is a release tree reached over http(s) or file://.
type Source struct {
	Base   string       // the tree's base URL (config key release_url)
	Client *http.Client // nil: one with bounded timeouts
	Key    []byte       // PEM public key; nil: PinnedKey()
}

// ErrNotFound is wrapped by the errors of Source for a file the tree does
// not have (HTTP 404, or no such file under a file:// base).
var ErrNotFound = errors.New("no such file in the release tree")

// smallTimeout bounds the whole fetch of a small file (latest, SHA256SUMS,
// its signature, a unit).
const smallTimeout = 60 * time.Second

// stallTimeout bounds the time a download may take to bring stallBytes
// more (or its end); tests shorten it. A server that drips a byte now and
// then, each within the timeout, is a stalled one too: a reset on every
// byte would let it hold an update for ever.
var stallTimeout = 60 * time.Second

// stallBytes is the least progress that keeps a download alive for
// another stallTimeout: 32 KiB a minute, which any link that can carry a
// release at all beats by far.
const stallBytes = 32 << 10

// errStalled is the cause of a download cancelled for want of bytes.
var errStalled = errors.New("stalled")

// defaultClient is the client of a Source without one: bounded connect,
// TLS and header waits, the environment's proxy, and no redirect from
// https to anything else.
var defaultClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          4,
	},
	CheckRedirect: checkRedirect,
}

// checkRedirect follows at most 10 redirects, never from https to another
// scheme.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("more than 10 redirects from %s", via[0].URL.Redacted())
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect from %s to %s: it leaves https", via[0].URL.Redacted(), req.URL.Redacted())
	}
	return nil
}

func (s *Source) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return defaultClient
}

func (s *Source) key() []byte {
	if s.Key != nil {
		return s.Key
	}
	return PinnedKey()
}

// Redacted is s.Base for messages and output, its password (if any)
// masked as url.URL.Redacted does: a private mirror's credentials do not
// belong in a terminal or a log. Every error of Source shows it so.
func (s *Source) Redacted() string {
	u, err := url.Parse(s.Base)
	if err != nil {
		return "(a release_url that does not parse)"
	}
	return u.Redacted()
}

// base parses s.Base and refuses a scheme other than http, https and file.
func (s *Source) base() (*url.URL, error) {
	u, err := url.Parse(s.Base)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it quotes the whole URL, password and all
		}
		return nil, fmt.Errorf("release_url does not parse: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("release_url %q has no host", s.Redacted())
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("release_url %q names host %q; a file:// URL is a local path (file:///dir)", s.Redacted(), u.Host)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("release_url %q is not an absolute file:// path (file:///dir)", s.Redacted())
		}
	default:
		return nil, fmt.Errorf("release_url %q: scheme %q is not http, https or file; set release_url to the base URL of a release tree", s.Redacted(), u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		bare := *u
		bare.RawQuery, bare.Fragment = "", ""
		return nil, fmt.Errorf("release_url %q has a query or fragment (not shown); want the plain base URL of a release tree", bare.Redacted())
	}
	return u, nil
}

// url is the URL of elem (checked names) under the base.
func (s *Source) url(elem ...string) (*url.URL, error) {
	u, err := s.base()
	if err != nil {
		return nil, err
	}
	for _, e := range elem {
		if err := checkFileName(e); err != nil {
			return nil, fmt.Errorf("release file name: %w", err)
		}
	}
	return u.JoinPath(elem...), nil
}

// Latest reads <base>/latest: one line naming a release version.
func (s *Source) Latest(ctx context.Context) (Version, error) {
	u, err := s.url(LatestFile)
	if err != nil {
		return Version{}, err
	}
	data, err := s.small(ctx, u)
	if errors.Is(err, ErrNotFound) {
		return Version{}, fmt.Errorf("no %s file at %s: is release_url right? (%w)", LatestFile, s.Redacted(), err)
	}
	if err != nil {
		return Version{}, err
	}
	text := strings.TrimSpace(string(data))
	if text == "" {
		// Not ParseVersion's "a development build": nothing was built.
		return Version{}, fmt.Errorf("%s is empty; it should name the newest release on one line (v0.3.1): a publish may be under way, or release_url is not a release tree", u.Redacted())
	}
	v, err := ParseVersion(text)
	if err != nil {
		return Version{}, fmt.Errorf("%s does not name a release (is release_url the base of a release tree?): %w", u.Redacted(), err)
	}
	return v, nil
}

// Release is one version's verified SHA256SUMS. Only Source.Release
// makes one that Download and Fetch accept: a Release built by hand (from
// sums nobody checked) is refused.
type Release struct {
	Version Version
	Sums    Sums

	verified bool // made by Source.Release, after the signature held
}

// Release downloads <base>/<v>/SHA256SUMS and its signature, verifies the
// signature (with s.Key, or PinnedKey()), and parses the sums, which must
// list both Units and at least one archive of v, and no archive of another
// version. Nothing else of v is trusted before this.
func (s *Source) Release(ctx context.Context, v Version) (*Release, error) {
	if _, err := ParseVersion(v.String()); err != nil {
		return nil, err
	}
	u, err := s.url(v.String(), SumsFile)
	if err != nil {
		return nil, err
	}
	data, err := s.small(ctx, u)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("version %s is not published at %s (%w)", v, s.Redacted(), err)
	}
	if err != nil {
		return nil, err
	}
	su, err := s.url(v.String(), SigFile)
	if err != nil {
		return nil, err
	}
	sig, err := s.small(ctx, su)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("version %s at %s has no %s; refusing an unsigned release (%w)", v, s.Redacted(), SigFile, err)
	}
	if err != nil {
		return nil, err
	}
	if err := VerifySignature(s.key(), data, sig); err != nil {
		return nil, fmt.Errorf("release %s at %s: %w", v, s.Redacted(), err)
	}
	sums, err := ParseSums(data)
	if err != nil {
		return nil, fmt.Errorf("release %s at %s: %w", v, s.Redacted(), err)
	}
	if err := checkListing(v, sums); err != nil {
		return nil, fmt.Errorf("release %s at %s: %w", v, s.Redacted(), err)
	}
	return &Release{Version: v, Sums: sums, verified: true}, nil
}

// checkListing refuses signed sums that are not those of release v: a
// unit missing, no archive of v, or an archive of another version (a
// SHA256SUMS replayed under another version's directory).
func checkListing(v Version, sums Sums) error {
	for _, u := range Units {
		if _, ok := sums[u]; !ok {
			return fmt.Errorf("%s does not list %s", SumsFile, u)
		}
	}
	archives := 0
	for name := range sums {
		if !strings.HasPrefix(name, "banger_v") || !strings.Contains(name, "_linux_") || !strings.HasSuffix(name, archiveSuffix) {
			continue // not a release archive's name
		}
		if !strings.HasPrefix(name, archivePrefix(v)) {
			return fmt.Errorf("%s lists %s, which is not an archive of %s; refusing sums signed for another release", SumsFile, name, v)
		}
		archives++
	}
	if archives == 0 {
		return fmt.Errorf("%s lists no archive of %s", SumsFile, v)
	}
	return nil
}

// Download streams <base>/<version>/<name> into dst, refusing more than max
// bytes, reporting bytes to p (phase "download <name>"), and fails unless
// the bytes match rel's sums (the caller discards what it wrote when
// Download fails). A name rel's sums do not list, or a rel not made by
// Source.Release, is refused before any request; so is a body longer
// than max, and one shorter than its declared length.
func (s *Source) Download(ctx context.Context, rel *Release, name string, max int64, dst io.Writer, p progress.Reporter) error {
	p = progress.OrNop(p)
	if rel == nil || !rel.verified {
		return fmt.Errorf("downloading %s: its sums were not verified (a Release not made by Source.Release); refusing it", name)
	}
	if _, ok := rel.Sums[name]; !ok {
		return fmt.Errorf("%s is not listed in the %s of %s; refusing a file the release did not sign", name, SumsFile, rel.Version)
	}
	u, err := s.url(rel.Version.String(), name)
	if err != nil {
		return err
	}
	p.Phase("download " + name)
	digest, err := s.get(ctx, u, max, dst, p)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s of %s is not published at %s (%w)", name, rel.Version, s.Redacted(), err)
	}
	if err != nil {
		return err
	}
	return rel.Sums.Check(name, digest)
}

// Fetch downloads a small file of rel (a unit template), checked against
// rel's sums, bounded by MaxSumsSize.
func (s *Source) Fetch(ctx context.Context, rel *Release, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, smallTimeout)
	defer cancel()
	var b bytes.Buffer
	if err := s.Download(ctx, rel, name, MaxSumsSize, &b, nil); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// small reads a small file whole, within smallTimeout and MaxSumsSize.
func (s *Source) small(ctx context.Context, u *url.URL) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, smallTimeout)
	defer cancel()
	var b bytes.Buffer
	if _, err := s.get(ctx, u, MaxSumsSize, &b, progress.Nop{}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// get copies the file at u into dst, at most max bytes, and returns the
// SHA-256 of what it copied. It fails when stallTimeout passes without
// stallBytes more (or the end) coming, and when the body is longer than
// max or shorter than its declared length.
func (s *Source) get(ctx context.Context, u *url.URL, max int64, dst io.Writer, p progress.Reporter) ([32]byte, error) {
	var digest [32]byte
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	where := u.Redacted()
	body, size, err := s.open(ctx, u)
	if err != nil {
		return digest, s.fail(ctx, where, 0, -1, err)
	}
	defer body.Close()
	if size > max {
		return digest, fmt.Errorf("%s is %d bytes, larger than %d; refusing", where, size, max)
	}
	p.SetTotal(max0(size), progress.Bytes)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n, since int64 // bytes copied, and since the stall timer's last reset
	for {
		if err := ctx.Err(); err != nil {
			return digest, s.fail(ctx, where, n, size, err)
		}
		k, rerr := body.Read(buf)
		if k > 0 {
			if since += int64(k); since >= stallBytes {
				stall.Reset(stallTimeout)
				since = 0
			}
			if n+int64(k) > max {
				return digest, fmt.Errorf("%s is larger than %d; refusing", where, max)
			}
			n += int64(k)
			h.Write(buf[:k])
			if _, err := dst.Write(buf[:k]); err != nil {
				return digest, fmt.Errorf("downloading %s: writing: %w", where, err)
			}
			p.Add(int64(k))
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return digest, s.fail(ctx, where, n, size, rerr)
		}
	}
	if size >= 0 && n != size {
		return digest, fmt.Errorf("downloading %s: it ended after %d of its %d bytes; refusing a truncated file", where, n, size)
	}
	h.Sum(digest[:0])
	return digest, nil
}

// fail words an error of get after n bytes of size (-1: not declared),
// saying when it came of a stall or of a body cut short.
func (s *Source) fail(ctx context.Context, where string, n, size int64, err error) error {
	switch {
	case errors.Is(context.Cause(ctx), errStalled):
		return fmt.Errorf("downloading %s: stalled: less than %d bytes in %s, after %d bytes; giving up (a slow or hostile server; try again later)", where, stallBytes, stallTimeout, n)
	case errors.Is(err, io.ErrUnexpectedEOF) && size >= 0:
		return fmt.Errorf("downloading %s: the connection ended after %d of its %d bytes; refusing a truncated file (%w)", where, n, size, err)
	case n > 0:
		return fmt.Errorf("downloading %s: after %d bytes: %w", where, n, err)
	}
	return fmt.Errorf("downloading %s: %w", where, err)
}

func max0(n int64) int64 {
	if n < 0 {
		return 0
	}
	return n
}

// open starts reading the file at u and returns its body and its length
// (-1 when not declared).
func (s *Source) open(ctx context.Context, u *url.URL) (io.ReadCloser, int64, error) {
	if u.Scheme == "file" {
		return openFile(u.Path)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, 0, err
	}
	// The bytes as stored, never a transfer encoding of them: left to
	// itself the transport asks for gzip and undoes a Content-Encoding:
	// gzip, which a store sets on .tar.gz objects often enough, and the
	// archive's checksum then fails. curl in install.sh asks for nothing
	// either.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := s.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the caller names the URL
		}
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		// The code, not the server's reason phrase: that is any bytes
		// the server likes, terminal escapes included.
		status := fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			return nil, 0, fmt.Errorf("%s: %w", status, ErrNotFound)
		}
		return nil, 0, errors.New(strings.TrimSpace(status))
	}
	return resp.Body, resp.ContentLength, nil
}

// openFile opens a regular file of a file:// tree. It opens without
// blocking, so that a FIFO in the tree is refused instead of holding the
// open (which no context can cancel) until some writer comes; reads of a
// regular file ignore the flag.
func openFile(path string) (io.ReadCloser, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	return f, fi.Size(), nil
}
