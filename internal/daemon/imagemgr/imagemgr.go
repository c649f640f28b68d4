package imagemgr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/catalog"
	"banger/internal/keylock"
	"banger/internal/progress"
	"banger/internal/store"
)

// Store is the part of the store this package needs.
type Store interface {
	PutKernel(ctx context.Context, k store.Kernel) error
	GetKernel(ctx context.Context, name string) (store.Kernel, error)
	ListKernels(ctx context.Context) ([]store.Kernel, error)
	DeleteKernel(ctx context.Context, name string) error
	PutImage(ctx context.Context, im store.Image) error
	GetImage(ctx context.Context, name string) (store.Image, error)
	ListImages(ctx context.Context) ([]store.Image, error)
	DeleteImage(ctx context.Context, name string) error
}

// Progress is how long work reports; *opstate.Progress satisfies it.
type Progress = progress.Reporter

// Manager owns <state_dir>/kernels and <state_dir>/images.
type Manager struct {
	st       Store
	root     string
	initBin  func() (string, error)
	now      func() time.Time
	cat      Catalogs
	pulls    keylock.Map
	builders map[string]Builder
	oci      OCIImporter

	activeMu sync.Mutex
	active   map[string]int // work in progress (workDir, track): the sweep leaves it alone
}

// New returns a manager keeping managed artefacts under stateDir. initBin
// finds the static binary that serves as /init in the initramfs of imported
// kernels (the guest agent).
func New(st Store, stateDir string, initBin func() (string, error)) *Manager {
	return &Manager{st: st, root: stateDir, initBin: initBin, now: time.Now}
}

// KernelDir and ImageDir are where a managed artefact with the given id lives.
func (m *Manager) KernelDir(id string) string { return filepath.Join(m.root, "kernels", id) }
func (m *Manager) ImageDir(id string) string  { return filepath.Join(m.root, "images", id) }

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// InputError marks a request the caller got wrong (a bad name, a missing
// file); nothing was changed.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func badInput(err error) error {
	if err == nil {
		return nil
	}
	return &InputError{err}
}

// ValidName checks that name can name an image, kernel or VM: 1 to 63
// lowercase letters, digits, '-' and '.', starting and ending with a letter
// or digit, with no "..". The rule is the catalogs' own, so every catalog
// name is valid, and no name can carry a path.
func ValidName(kind, name string) error {
	if catalog.IsName(name) {
		return nil
	}
	why := "it must start and end with a letter or digit"
	switch {
	case name == "":
		why = "it is empty"
	case len(name) > 63:
		why = "it is longer than 63 characters"
	case strings.Contains(name, ".."):
		why = "it contains \"..\""
	default:
		for _, r := range name {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				why = fmt.Sprintf("it contains %q", r)
				break
			}
		}
	}
	return badInput(fmt.Errorf("%s name %q is not valid: %s; use lowercase letters, digits, '-' and '.' (1 to 63, a letter or digit at each end)", kind, name, why))
}

// nameFromRelease turns a kernel release such as "6.1.0-28-amd64" into a
// valid name, "linux-6-1-0-28-amd64".
func nameFromRelease(release string) string {
	var b strings.Builder
	b.WriteString("linux-")
	for _, r := range strings.ToLower(release) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	for strings.Contains(s, "--") {
		s = strings.ReplaceAll(s, "--", "-")
	}
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

// ErrNotFound and ErrExists come from the store; they are re-exported so
// callers need not import it to test for them.
var (
	ErrNotFound = store.ErrNotFound
	ErrExists   = store.ErrExists
)

func (m *Manager) checkFree(ctx context.Context, kind, name string) error {
	var err error
	if kind == "kernel" {
		_, err = m.st.GetKernel(ctx, name)
	} else {
		_, err = m.st.GetImage(ctx, name)
	}
	switch {
	case err == nil:
		return fmt.Errorf("%s %q %w: pick another name, or remove it first (banger %s rm %s)", kind, name, ErrExists, kind, name)
	case errors.Is(err, store.ErrNotFound):
		return nil
	}
	return err
}

// removeManagedDir deletes a managed artefact dir, but only one inside this
// manager's root: a corrupt row can never make it delete user files.
func (m *Manager) removeManagedDir(dir string) error {
	rel, err := filepath.Rel(m.root, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return fmt.Errorf("refusing to delete %s: it is not under the state dir %s", dir, m.root)
	}
	return os.RemoveAll(dir)
}
