package release

import (
	"context"
	"io"
	"net/http"

	"banger/internal/progress"
)

// Source is a release tree reached over http(s) or file://.
type Source struct {
	Base   string       // the tree's base URL (config key release_url)
	Client *http.Client // nil: one with bounded timeouts
	Key    []byte       // PEM public key; nil: PinnedKey()
}

// Latest reads <base>/latest.
func (s *Source) Latest(ctx context.Context) (Version, error) { panic("skeleton") }

// Release is one version's verified SHA256SUMS.
type Release struct {
	Version Version
	Sums    Sums
}

// Release downloads <base>/<v>/SHA256SUMS and its signature, verifies the
// signature, and parses the sums. Nothing else of v is trusted before this.
func (s *Source) Release(ctx context.Context, v Version) (*Release, error) { panic("skeleton") }

// Download streams <base>/<version>/<name> into dst, refusing more than max
// bytes, reporting bytes to p, and fails unless the bytes match rel's sums
// (the caller discards what it wrote when Download fails).
func (s *Source) Download(ctx context.Context, rel *Release, name string, max int64, dst io.Writer, p progress.Reporter) error {
	panic("skeleton")
}

// Fetch downloads a small file of rel (a unit template), checked against
// rel's sums, bounded by MaxSumsSize.
func (s *Source) Fetch(ctx context.Context, rel *Release, name string) ([]byte, error) {
	panic("skeleton")
}
