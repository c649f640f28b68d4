package kernelprep

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"banger/internal/guest/initrd"
	"banger/internal/kernelprep/newc"
)

// InitramfsOptions says what goes into an initramfs.
type InitramfsOptions struct {
	// Init is the path of a static x86_64 binary that becomes /init
	// (normally one whose main calls initrd.Run).
	Init string
	// Modules are module files (.ko, .ko.xz, .ko.zst, .ko.gz) in load
	// order; they are stored uncompressed under initrd.ModulesDir and
	// listed in initrd.ManifestPath.
	Modules []string
	// Gzip compresses the archive; the kernel also takes it uncompressed.
	Gzip bool
}

// BuildInitramfs writes a newc cpio archive holding /init, the modules
// (decompressed to plain .ko so init can load them without decompressors),
// the manifest of their load order, /dev/console and the directories /dev,
// /proc, /sys and /newroot. The same inputs give the same bytes.
func BuildInitramfs(w io.Writer, opts InitramfsOptions) error {
	if opts.Init == "" {
		return fmt.Errorf("building the initramfs: no init binary given")
	}
	initData, err := os.ReadFile(opts.Init)
	if err != nil {
		return fmt.Errorf("building the initramfs: reading the init binary: %w", err)
	}
	if err := checkStaticInit(initData); err != nil {
		return fmt.Errorf("building the initramfs: init binary %s: %w", opts.Init, err)
	}
	type mod struct {
		name string
		data []byte
	}
	var mods []mod
	seen := map[string]bool{}
	for _, p := range opts.Modules {
		data, err := ReadModuleFile(p)
		if err != nil {
			return fmt.Errorf("building the initramfs: %w", err)
		}
		name := moduleName(p)
		if mi, err := modinfoFromELF(data); err == nil && mi.First("name") != "" {
			name = moduleName(mi.First("name"))
		}
		if seen[name] {
			return fmt.Errorf("building the initramfs: module %s is listed twice", name)
		}
		seen[name] = true
		mods = append(mods, mod{name, data})
	}

	out := w
	var zw *gzip.Writer
	if opts.Gzip {
		zw = gzip.NewWriter(w)
		out = zw
	}
	cw := newc.NewWriter(out)
	var manifest strings.Builder
	manifest.WriteString("# Kernel modules for banger's initramfs, in load order.\n")
	for _, m := range mods {
		fmt.Fprintf(&manifest, "%s/%s.ko\n", initrd.ModulesDir, m.name)
	}
	dirs := []string{"dev", "proc", "sys", strings.TrimPrefix(initrd.NewRoot, "/"), "root", "tmp"}
	dirs = append(dirs, parents(initrd.ModulesDir+"/x.ko")...)
	dirs = append(dirs, parents(initrd.ManifestPath)...)
	made := map[string]bool{}
	for _, d := range dirs {
		if made[d] {
			continue
		}
		made[d] = true
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	steps := []func() error{
		func() error { return cw.CharDev("dev/console", 0o600, 5, 1) },
		func() error { return cw.CharDev("dev/null", 0o666, 1, 3) },
		func() error { return cw.File("init", 0o755, initData) },
		func() error {
			return cw.File(strings.TrimPrefix(initrd.ManifestPath, "/"), 0o644, []byte(manifest.String()))
		},
	}
	for _, m := range mods {
		steps = append(steps, func() error {
			return cw.File(strings.TrimPrefix(initrd.ModulesDir, "/")+"/"+m.name+".ko", 0o644, m.data)
		})
	}
	steps = append(steps, cw.Close)
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("building the initramfs: %w", err)
		}
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("building the initramfs: %w", err)
		}
	}
	return nil
}

// parents returns the directories leading to p, outermost first, without a
// leading "/" (for "/a/b/c": a, a/b).
func parents(p string) []string {
	p = strings.TrimPrefix(path.Clean(p), "/")
	var out []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

// checkStaticInit refuses an init that the initramfs cannot run: not an
// x86_64 executable, or dynamically linked (it has no libraries there).
func checkStaticInit(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("built for %v, the guest is x86_64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked; build it static (for Go: CGO_ENABLED=0)")
		}
	}
	return nil
}
