package consolelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"banger/internal/atomicfile"
)

// DefaultMax is the size a console log may reach before it is rotated.
const DefaultMax = 2 << 20

// DefaultInterval is how often Keep looks at the logs.
const DefaultInterval = time.Second

// Rotate caps the log at path: when it is larger than max bytes, its last
// max bytes replace path.1 (written aside, then renamed) and path is
// truncated in place, so that a writer holding it open in append mode goes
// on at its start. What is written between the copy and the truncation is
// lost. A missing log is not an error.
func Rotate(path string, max int64) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() <= max {
		return false, nil
	}
	// A random temporary name opened O_EXCL|O_NOFOLLOW, so that nothing
	// placed beside the log is written through; not flushed, as a lost
	// copy of a capped console log is no loss worth an fsync a second.
	tail := io.NewSectionReader(f, fi.Size()-max, max)
	if _, err := atomicfile.WriteFrom(path+".1", tail, atomicfile.Mode(0o600), atomicfile.NoSync()); err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("rotate %s: truncate: %w", path, err)
	}
	return true, nil
}

// Keep rotates the logs at paths every interval until ctx ends or stop is
// closed. A failure is logged once per log until it succeeds again.
func Keep(ctx context.Context, stop <-chan struct{}, paths []string, max int64, interval time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failing := map[string]bool{}
	check := func() {
		for _, p := range paths {
			_, err := Rotate(p, max)
			if err != nil && !failing[p] {
				log.Warn("cap the console log", "path", p, "error", err)
			}
			failing[p] = err != nil
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		check()
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
	}
}
