package ociimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/progress"
)

// DefaultPlatform is the platform chosen from a multi-arch index when
// Options.Platform is empty.
const DefaultPlatform = "linux/amd64"

// DefaultMinHeadroom is the smallest free space added on top of the content
// when Options.Headroom is zero; the default headroom is the larger of this and
// a fifth of the content size.
const DefaultMinHeadroom int64 = 256 << 20

// Progress receives coarse progress of an import: phases "resolve", "pull"
// (counted in bytes of the layers' blobs, with their total), "unpack",
// "extra", "mkfs". Implementations need not be safe for concurrent use:
// Import serialises its calls. A nil Progress is allowed.
type Progress = progress.Reporter

// Options tune an import. The zero value pulls linux/amd64 over HTTPS with the
// host's Docker credentials.
type Options struct {
	// Insecure allows plain-HTTP registries.
	Insecure bool
	// Platform is "os/arch[/variant]"; empty means DefaultPlatform.
	Platform string
	// Headroom is the free space added on top of the content. Zero means the
	// larger of DefaultMinHeadroom and 20% of the content; negative is an error.
	Headroom int64
	// MinSize is the smallest image size in bytes (0: no minimum).
	MinSize int64
	// Keychain supplies registry credentials; nil means authn.DefaultKeychain
	// (the Docker config of the user running the import).
	Keychain authn.Keychain
	// Extra, when set, is called on the unpacked tree before mkfs; the daemon
	// adds banger's guest pieces here. An error aborts the import.
	Extra func(root string) error
	// MkfsPath is the mkfs.ext4 binary; empty means "mkfs.ext4" on PATH.
	MkfsPath string
	// Limits bound the entries of the image and the bytes of their names;
	// zero fields take DefaultMaxEntries and DefaultMaxPathBytes.
	Limits Limits
	// WorkDir holds the temporary tree and downloaded blobs; empty means the
	// directory of dest. The image itself is always written beside dest.
	WorkDir string
}

// ImageConfig is the part of the image's runtime configuration a VM can use.
type ImageConfig struct {
	Env        []string          `json:"env,omitempty"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	WorkingDir string            `json:"workdir,omitempty"`
	User       string            `json:"user,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// Result describes an imported image.
type Result struct {
	// Digest is the digest of the (platform-specific) image manifest.
	Digest string
	// Rootfs is the path of the written ext4 image (dest).
	Rootfs string
	// Size is the size of the ext4 image in bytes.
	Size int64
	// ContentSize is the estimated space the unpacked tree needs.
	ContentSize int64
	// Layers is the number of layers applied.
	Layers int
	// Platform is the platform of the image ("linux/amd64").
	Platform string
	Config   ImageConfig
	// Warnings lists what could not be reproduced exactly (xattrs the work
	// directory cannot hold under a root import, unknown entry types).
	Warnings []string
}

func (o Options) platform() (*v1.Platform, error) {
	s := o.Platform
	if s == "" {
		s = DefaultPlatform
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("invalid platform %q: want os/arch[/variant], e.g. %s", s, DefaultPlatform)
	}
	return p, nil
}

func (o Options) remoteOptions(ctx context.Context, p *v1.Platform) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(*p),
	}
}

func parseRef(ref string, insecure bool) (name.Reference, error) {
	if strings.TrimSpace(ref) == "" {
		return nil, errors.New("empty image reference: give a reference such as registry.example/team/app:1.0")
	}
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	return r, nil
}

// resolve finds the image for the wanted platform. It fetches manifests only.
func resolve(ctx context.Context, ref string, opts Options) (v1.Image, string, *v1.Platform, error) {
	p, err := opts.platform()
	if err != nil {
		return nil, "", nil, err
	}
	r, err := parseRef(ref, opts.Insecure)
	if err != nil {
		return nil, "", nil, err
	}
	img, err := remote.Image(r, opts.remoteOptions(ctx, p)...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", nil, fmt.Errorf("resolve %s: %w", ref, ctx.Err())
		}
		return nil, "", nil, fmt.Errorf("resolve %s for %s: %w (check the reference, your registry login in the Docker config, and --insecure for plain-HTTP registries)", ref, p, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, "", nil, fmt.Errorf("resolve %s: manifest digest: %w", ref, err)
	}
	return img, d.String(), p, nil
}

// Digest resolves ref to the digest of the image manifest Import would use
// for opts.Platform, fetching manifests but no layers, so a caller can skip
// re-importing an image it already has.
func Digest(ctx context.Context, ref string, opts Options) (string, error) {
	_, d, _, err := resolve(ctx, ref, opts)
	return d, err
}

// Import pulls ref, applies its layers in order into a temporary tree, runs
// opts.Extra on it, and writes an ext4 image at dest through a temporary file
// beside dest and a rename. On failure or cancellation nothing is left behind
// and an existing dest is untouched.
func Import(ctx context.Context, ref string, dest string, opts Options, p Progress) (res Result, err error) {
	prog := newLockedProgress(p)
	dest, mkfs, err := checkTarget(ref, dest, opts)
	if err != nil {
		return Result{}, err
	}

	prog.Phase("resolve")
	img, digest, plat, err := resolve(ctx, ref, opts)
	if err != nil {
		return Result{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Result{}, fmt.Errorf("import %s: read image config: %w", ref, err)
	}
	if cfg.OS != "" && cfg.Architecture != "" &&
		(cfg.OS != plat.OS || cfg.Architecture != plat.Architecture) {
		return Result{}, fmt.Errorf("import %s: image is %s/%s but %s was asked for: pick a reference or --platform that matches", ref, cfg.OS, cfg.Architecture, plat)
	}
	layers, err := img.Layers()
	if err != nil {
		return Result{}, fmt.Errorf("import %s: list layers: %w", ref, err)
	}

	res, err = build(ctx, ref, dest, mkfs, opts, prog, func(work string, a *applier) error {
		prog.Phase("pull")
		return pullLayers(ctx, layers, work, a, prog)
	})
	if err != nil {
		return Result{}, err
	}
	res.Digest = digest
	res.Layers = len(layers)
	res.Platform = plat.String()
	res.Config = ImageConfig{
		Env:        cfg.Config.Env,
		Entrypoint: cfg.Config.Entrypoint,
		Cmd:        cfg.Config.Cmd,
		WorkingDir: cfg.Config.WorkingDir,
		User:       cfg.Config.User,
		Labels:     cfg.Config.Labels,
	}
	return res, nil
}

// ImportTar makes an ext4 image at dest from one uncompressed tar stream of
// a whole root filesystem (what mmdebstrap writes, for example), the way
// Import does from an image's layers: same checks and limits, opts.Extra,
// and the same result whether or not the caller is root. name names the
// stream in errors.
func ImportTar(ctx context.Context, r io.Reader, name, dest string, opts Options, p Progress) (Result, error) {
	prog := newLockedProgress(p)
	dest, mkfs, err := checkTarget(name, dest, opts)
	if err != nil {
		return Result{}, err
	}
	res, err := build(ctx, name, dest, mkfs, opts, prog, func(_ string, a *applier) error {
		prog.Phase("unpack")
		return a.apply(ctx, r, name)
	})
	if err == nil {
		res.Layers = 1
	}
	return res, err
}

// checkTarget validates dest and finds mkfs.ext4 before anything is fetched.
func checkTarget(ref, dest string, opts Options) (string, string, error) {
	if opts.Headroom < 0 || opts.MinSize < 0 {
		return "", "", fmt.Errorf("import %s: headroom and minimum size must not be negative", ref)
	}
	if dest == "" {
		return "", "", fmt.Errorf("import %s: no destination path given", ref)
	}
	dest, err := filepath.Abs(dest)
	if err != nil {
		return "", "", fmt.Errorf("import %s: destination %q: %w", ref, dest, err)
	}
	destDir := filepath.Dir(dest)
	if st, serr := os.Stat(destDir); serr != nil || !st.IsDir() {
		return "", "", fmt.Errorf("import %s: destination directory %s does not exist or is not a directory: create it first", ref, destDir)
	}
	if st, serr := os.Lstat(dest); serr == nil && st.IsDir() {
		return "", "", fmt.Errorf("import %s: destination %s is a directory: give a file path", ref, dest)
	}
	mkfs := opts.MkfsPath
	if mkfs == "" {
		mkfs = "mkfs.ext4"
	}
	mkfs, err = lookPath(mkfs)
	if err != nil {
		return "", "", fmt.Errorf("import %s: %w", ref, err)
	}
	return dest, mkfs, nil
}

// build makes a work directory, lets fill apply the content onto the tree,
// runs opts.Extra, and writes the ext4 image at dest. Without the privilege
// to set owners and make device nodes, the metadata the tree cannot carry is
// written into the image by debugfs (manifest.go); the image is the same.
func build(ctx context.Context, ref, dest, mkfs string, opts Options, prog *lockedProgress, fill func(work string, a *applier) error) (res Result, err error) {
	workParent := opts.WorkDir
	if workParent == "" {
		workParent = filepath.Dir(dest)
	}
	work, err := os.MkdirTemp(workParent, ".oci-import-*")
	if err != nil {
		return Result{}, fmt.Errorf("import %s: create work directory in %s: %w", ref, workParent, err)
	}
	defer func() {
		if rerr := removeTree(work); rerr != nil && err == nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("could not remove work directory %s: %v", work, rerr))
		}
	}()
	root := filepath.Join(work, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return Result{}, fmt.Errorf("import %s: %w", ref, err)
	}

	a := newApplier(root, opts.Limits)
	var debugfs string
	if !privileged(work) {
		if debugfs, err = findDebugfs(mkfs); err != nil {
			return Result{}, fmt.Errorf("import %s: %w", ref, err)
		}
		a = newRootlessApplier(root, opts.Limits)
	}

	if err := fill(work, a); err != nil {
		return Result{}, fmt.Errorf("import %s: %w", ref, err)
	}

	if a.rootless {
		if err := a.freeze(); err != nil {
			return Result{}, fmt.Errorf("import %s: %w", ref, err)
		}
	}
	if opts.Extra != nil {
		prog.Phase("extra")
		if err := opts.Extra(root); err != nil {
			return Result{}, fmt.Errorf("import %s: adding banger's files to the tree: %w", ref, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("import %s: %w", ref, err)
	}

	prog.Phase("mkfs")
	usage, err := measureTree(root)
	if err != nil {
		return Result{}, fmt.Errorf("import %s: measure unpacked tree: %w", ref, err)
	}
	size := imageSize(usage, opts)
	var finish func(image string) error
	if a.rootless {
		cmds := filepath.Join(work, "metadata.debugfs")
		if _, err := writeManifest(root, a.meta, cmds); err != nil {
			return Result{}, fmt.Errorf("import %s: list the owners, modes and device nodes for debugfs: %w", ref, err)
		}
		finish = func(image string) error { return applyManifest(ctx, debugfs, cmds, image) }
	}
	size, err = writeExt4(ctx, mkfs, root, dest, size, usage.inodes, finish)
	if err != nil {
		return Result{}, fmt.Errorf("import %s: %w", ref, err)
	}
	return Result{Rootfs: dest, Size: size, ContentSize: usage.bytes, Warnings: a.warnings}, nil
}

// removeTree removes a work tree, first giving its owner write access to
// directories a root import left read-only (harmless as root; needed when
// the tree is a user's).
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// lockedProgress serialises calls to a Progress and tolerates nil.
type lockedProgress struct {
	mu sync.Mutex
	p  Progress
}

func newLockedProgress(p Progress) *lockedProgress { return &lockedProgress{p: p} }

func (l *lockedProgress) Phase(s string) {
	if l.p == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Phase(s)
}

func (l *lockedProgress) SetTotal(n int64, unit progress.Unit) {
	if l.p == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.SetTotal(n, unit)
}

func (l *lockedProgress) Add(n int64) {
	if l.p == nil || n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Add(n)
}
