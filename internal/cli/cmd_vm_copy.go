package cli

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"banger/internal/guest/client"
	"banger/internal/guest/tarx"
)

// newVMCopyCmd builds `banger vm cp`.
func (a *app) newVMCopyCmd() *cobra.Command {
	var overwrite, preserve bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file or tree into or out of a VM (NAME:/path on one side)",
		Long: `Copy a file or directory tree between this host and a VM. One side is
NAME:/path in the VM. The copy lands inside DST, which must be a directory,
as DST/<base name of SRC>; symlinks are copied as symlinks.

Into a VM, existing files are replaced and modes are kept, owners too when
the guest agent runs as root.

Out of a VM, the guest is not trusted. Everything it sends must lie under
DST/<base name of SRC>, or the copy fails naming the entry; no symlink is
followed; DST/<base name of SRC> must not exist (--overwrite replaces
existing files there instead, each whole, and never through a symlink);
setuid and setgid bits are dropped and your umask applies (--preserve keeps
the guest's modes and, as root, its owners); devices and FIFOs are skipped
with a warning. A copy that fails removes what it made.`,
		Args: exactArgs(2, "a source and a destination"),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVM, srcPath, srcRemote := splitVMPath(args[0])
			dstVM, dstPath, dstRemote := splitVMPath(args[1])
			switch {
			case srcRemote && dstRemote:
				return usagef("copy between two VMs is not supported: copy through the host")
			case !srcRemote && !dstRemote:
				return usagef("one side must be NAME:/path in a VM")
			case dstRemote:
				if overwrite || preserve {
					return usagef("--overwrite and --preserve apply to a copy out of a VM; a copy into a VM always replaces files and keeps modes")
				}
				c, err := a.agentClient(cmd.Context(), dstVM)
				if err != nil {
					return err
				}
				return c.CopyIn(cmd.Context(), srcPath, dstPath)
			default:
				c, err := a.agentClient(cmd.Context(), srcVM)
				if err != nil {
					return err
				}
				err = c.CopyOut(cmd.Context(), srcPath, dstPath, client.CopyOutOptions{
					Overwrite: overwrite,
					Preserve:  preserve,
					Skipped: func(name, what string) {
						a.warnf("%s", skippedWarning(srcVM, name, what))
					},
				})
				if exists := (*tarx.ExistsError)(nil); !overwrite && errors.As(err, &exists) {
					return fmt.Errorf("%w; remove it, choose another destination, or pass --overwrite to replace files there", err)
				}
				return err
			}
		},
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "out of a VM: replace existing files under DST/<base name of SRC> (never following symlinks)")
	cmd.Flags().BoolVar(&preserve, "preserve", false, "out of a VM: keep the guest's modes, setuid and setgid bits included, and (as root) its owners")
	return cmd
}

// skippedWarning says that the guest's entry name was not copied. The name
// is the guest's: quoted, so that it brings no escape sequence or line break
// to the terminal.
func skippedWarning(vm, name, what string) string {
	return fmt.Sprintf("skipped %s:%q: it is a %s, and only files, directories and symlinks are copied out of a VM", vm, name, what)
}

// splitVMPath splits "NAME:/path" (a VM side) from a plain host path.
func splitVMPath(s string) (vm, p string, remote bool) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", s, false
	}
	return name, rest, true
}

// copyWorkspace copies dir's contents to /workspace in the guest.
func copyWorkspace(ctx context.Context, c *client.Client, dir string) error {
	return copyTreeAs(ctx, c, dir, "/", "workspace")
}

// copyTreeAs copies the host directory dir into the guest directory
// parent as parent/name, renaming the tree's top directory on the fly. dir
// itself may be a symlink (the user named it); nothing inside it is
// followed, and special files stop the copy rather than being read. Both
// goroutines end before it returns.
func copyTreeAs(ctx context.Context, c *client.Client, dir, parent, name string) error {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	inner, innerW := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		innerW.CloseWithError(tarx.Pack(ctx, innerW, dir))
	}()
	go func() {
		defer wg.Done()
		err := renameTop(inner, pw, name)
		// Stop Pack too when the renaming stopped first.
		inner.CloseWithError(cmp.Or(err, io.ErrClosedPipe))
		pw.CloseWithError(err)
	}()
	err = c.CopyInTar(ctx, pr, parent)
	// The agent may have answered before taking everything: stop the
	// writers, and wait for them.
	pr.CloseWithError(errors.New("the copy into the guest has ended"))
	wg.Wait()
	return err
}

// renameTop copies the tar stream r to w with its top-level name changed
// to name.
func renameTop(r io.Reader, w io.Writer, name string) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		_, rest, _ := strings.Cut(h.Name, "/")
		h.Name = path.Join(name, rest)
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			_, lrest, _ := strings.Cut(h.Linkname, "/")
			h.Linkname = path.Join(name, lrest)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	return tw.Close()
}
