package kernelprep

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside a prepared kernel directory.
const (
	VmlinuxName = "vmlinux"
	InitrdName  = "initrd.img"
	ModulesName = "modules" // holds <release>/, laid out like /lib/modules
)

// Options tunes Prepare.
type Options struct {
	// Init is the static init binary for the initramfs (required).
	Init string
	// Modules must all load (or be built in); nil means DefaultModules.
	Modules []string
	// OptionalModules load when present; nil means DefaultOptionalModules.
	OptionalModules []string
	// UncompressedInitrd leaves the initramfs uncompressed (it is gzipped
	// otherwise).
	UncompressedInitrd bool
	// Progress, if set, is told about each step.
	Progress func(step string)
}

// Artefacts are the files Prepare made.
type Artefacts struct {
	Dir        string   // the destination directory
	Vmlinux    string   // Dir/vmlinux: uncompressed x86_64 ELF kernel
	Initrd     string   // Dir/initrd.img
	ModulesDir string   // Dir/modules: copy its contents to /lib/modules in the guest
	Release    string   // kernel release, e.g. "6.1.0-56-amd64"
	Modules    []string // names of the modules in the initramfs, in load order
}

// Prepare turns a kernel package, a .deb file or an extracted tree (see
// OpenTree), into dstDir/vmlinux, dstDir/initrd.img and
// dstDir/modules/<release>/. The result is built in a temporary directory
// beside dstDir and renamed into place, replacing an existing dstDir only
// once everything succeeded; on failure nothing is left behind.
func Prepare(ctx context.Context, src, dstDir string, opts Options) (Artefacts, error) {
	fail := func(err error) (Artefacts, error) {
		return Artefacts{}, fmt.Errorf("preparing kernel from %s: %w", src, err)
	}
	if opts.Init == "" {
		return fail(errors.New("no init binary for the initramfs given"))
	}
	if opts.Modules == nil {
		opts.Modules = DefaultModules
	}
	if opts.OptionalModules == nil {
		opts.OptionalModules = DefaultOptionalModules
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	st, err := os.Stat(src)
	if err != nil {
		return fail(err)
	}
	dstDir = filepath.Clean(dstDir)
	parent := filepath.Dir(dstDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dstDir)+".tmp-")
	if err != nil {
		return fail(err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail(err)
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return fail(err)
	}

	var tree Tree
	fromDeb := !st.IsDir()
	if fromDeb {
		progress("extracting " + filepath.Base(src))
		ex := filepath.Join(tmp, "src")
		if err := os.Mkdir(ex, 0o755); err != nil {
			return fail(err)
		}
		if tree, err = ReadDeb(ctx, src, ex); err != nil {
			return fail(err)
		}
	} else if tree, err = OpenTree(src); err != nil {
		return fail(err)
	}

	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	progress("decompressing the kernel image")
	// Streamed to the file: the decoded kernel (tens of MiB) is never held
	// in memory, which keeps the daemon small during kernel import.
	if err := WriteVmlinuxFile(tree.Kernel, filepath.Join(out, VmlinuxName)); err != nil {
		return fail(err)
	}
	art := Artefacts{Dir: dstDir, Release: tree.Release,
		Vmlinux:    filepath.Join(dstDir, VmlinuxName),
		Initrd:     filepath.Join(dstDir, InitrdName),
		ModulesDir: filepath.Join(dstDir, ModulesName)}

	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	progress("resolving module dependencies")
	ix, err := ScanModules(tree.ModulesDir)
	if err != nil {
		return fail(err)
	}
	mods, err := ix.Order(opts.Modules, opts.OptionalModules)
	if err != nil {
		return fail(err)
	}
	var paths []string
	for _, m := range mods {
		paths = append(paths, m.Path)
		art.Modules = append(art.Modules, m.Name)
	}

	progress("building the initramfs")
	if err := writeInitramfs(filepath.Join(out, InitrdName), InitramfsOptions{
		Init: opts.Init, Modules: paths, Gzip: !opts.UncompressedInitrd}); err != nil {
		return fail(err)
	}

	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	progress("copying the module tree")
	modDst := filepath.Join(out, ModulesName, tree.Release)
	if err := os.Mkdir(filepath.Join(out, ModulesName), 0o755); err != nil {
		return fail(err)
	}
	if fromDeb {
		err = os.Rename(tree.ModulesDir, modDst)
	} else {
		err = copyTree(ctx, tree.ModulesDir, modDst)
	}
	if err != nil {
		return fail(fmt.Errorf("installing the module tree: %w", err))
	}

	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := replaceDir(out, dstDir, tmp); err != nil {
		return fail(err)
	}
	progress("kernel " + tree.Release + " ready in " + dstDir)
	return art, nil
}

// ReadArtefacts describes a directory Prepare made earlier.
func ReadArtefacts(dir string) (Artefacts, error) {
	a := Artefacts{Dir: dir, Vmlinux: filepath.Join(dir, VmlinuxName), ModulesDir: filepath.Join(dir, ModulesName)}
	if _, err := os.Stat(a.Vmlinux); err != nil {
		return Artefacts{}, fmt.Errorf("%s is not a prepared kernel directory: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, InitrdName)); err == nil {
		a.Initrd = filepath.Join(dir, InitrdName)
	}
	entries, err := os.ReadDir(a.ModulesDir)
	if err != nil {
		return Artefacts{}, fmt.Errorf("%s is not a prepared kernel directory: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if a.Release != "" {
				return Artefacts{}, fmt.Errorf("%s holds modules for two releases (%s, %s)", a.ModulesDir, a.Release, e.Name())
			}
			a.Release = e.Name()
		}
	}
	if a.Release == "" {
		return Artefacts{}, fmt.Errorf("%s holds no module tree", a.ModulesDir)
	}
	return a, nil
}

// replaceDir renames src to dst. An existing dst is first moved aside into
// scratch and deleted afterwards, or put back if the rename fails.
func replaceDir(src, dst, scratch string) error {
	old := filepath.Join(scratch, "old")
	hadOld := false
	if _, err := os.Lstat(dst); err == nil {
		if err := os.Rename(dst, old); err != nil {
			return fmt.Errorf("moving the previous %s aside: %w", dst, err)
		}
		hadOld = true
	}
	if err := os.Rename(src, dst); err != nil {
		if hadOld {
			_ = os.Rename(old, dst)
		}
		return fmt.Errorf("renaming the result into %s: %w", dst, err)
	}
	return nil // the caller removes scratch, and with it the old copy
}

func writeInitramfs(p string, opts InitramfsOptions) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = BuildInitramfs(bw, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyTree copies a directory of regular files, directories and symlinks.
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return copyFile(p, target, info.Mode().Perm())
		default:
			return nil
		}
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
