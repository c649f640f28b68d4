package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) newImageCmd() *cobra.Command {
	return group("image", "Pull, register and manage images",
		a.newImagePullCmd(),
		a.newImageRegisterCmd(),
		a.newImagePromoteCmd(),
		a.newImageBuildCmd(),
		a.newImageListCmd(),
		a.newImageInspectCmd(),
		a.newRemoveCmd("image", "images"),
	)
}

func (a *app) newKernelCmd() *cobra.Command {
	return group("kernel", "Pull, import and manage guest kernels",
		a.newKernelPullCmd(),
		a.newKernelImportCmd(),
		a.newKernelListCmd(),
		a.newKernelInspectCmd(),
		a.newRemoveCmd("kernel", "kernels"),
	)
}

// startOp asks the daemon for an operation with POST path and then follows
// it, or with detach prints its id and returns.
func (a *app) startOp(ctx context.Context, path string, body any, detach bool) (rpc.Operation, error) {
	c, err := a.daemon(ctx)
	if err != nil {
		return rpc.Operation{}, err
	}
	var op rpc.Operation
	if err := c.Do(ctx, "POST", path, body, &op); err != nil {
		return rpc.Operation{}, err
	}
	if detach {
		fmt.Fprintln(a.stdout, op.ID)
		return op, nil
	}
	return a.follow(ctx, op.ID)
}

func addDetachFlag(cmd *cobra.Command, detach *bool) {
	cmd.Flags().BoolVarP(detach, "detach", "d", false, "print the operation id and return at once (follow it with `banger op wait ID`)")
}

func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

func (a *app) newKernelImportCmd() *cobra.Command {
	var name string
	var detach bool
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import a kernel from a linux-image .deb or an extracted tree (boot/ and lib/modules/)",
		Long: `Import a kernel from a Debian or Ubuntu linux-image .deb, or from a directory
holding boot/vmlinuz-* and lib/modules/<release>/. banger extracts an
uncompressed vmlinux, builds an initramfs that loads the virtio, vsock and ext4
modules, and keeps the module tree. The kernel becomes a managed artefact under
the state dir. Without --name the name comes from the kernel release.`,
		Args: exactArgs(1, "one path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := absPath(args[0])
			if err != nil {
				return err
			}
			_, err = a.startOp(cmd.Context(), "/v1/kernels/import", rpc.ImportKernelRequest{Name: name, Path: p}, detach)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the kernel (default: from the kernel release)")
	addDetachFlag(cmd, &detach)
	return cmd
}

func (a *app) newKernelListCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List kernels",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var ks []rpc.Kernel
			if err := c.Do(cmd.Context(), "GET", "/v1/kernels", nil, &ks); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, ks)
			}
			tw := newTable(a.stdout, "NAME", "VERSION", "MANAGED", "ORIGIN", "CREATED")
			for _, k := range ks {
				row(tw, k.Name, orDash(k.Version), yesNo(k.Managed), orDash(k.OriginKind), ago(k.CreatedAt))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newKernelInspectCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a kernel in detail",
		Args:  exactArgs(1, "one kernel name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var k rpc.Kernel
			if err := c.Do(cmd.Context(), "GET", "/v1/kernels/"+pathSegment(args[0]), nil, &k); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, k)
			}
			tw := newTable(a.stdout, "FIELD", "VALUE")
			row(tw, "name", k.Name)
			row(tw, "id", k.ID)
			row(tw, "version", orDash(k.Version))
			row(tw, "managed", yesNo(k.Managed))
			row(tw, "vmlinux", k.Vmlinux)
			row(tw, "initrd", orDash(k.Initrd))
			row(tw, "modules", orDash(k.Modules))
			row(tw, "digest", orDash(k.Digest))
			row(tw, "origin", orDash(k.OriginKind)+" "+k.OriginRef)
			row(tw, "created", k.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newImageRegisterCmd() *cobra.Command {
	var req rpc.RegisterImageRequest
	cmd := &cobra.Command{
		Use:   "register NAME --rootfs FILE [--kernel NAME] [--work-seed FILE] [--initrd FILE] [--modules DIR]",
		Short: "Register an unmanaged image made of files you own",
		Long: `Register an unmanaged image: banger records where your files are and boots
from them, but never writes, moves or deletes them. Promote it later to give
banger its own copy.

Each file is checked first: the root filesystem and the work seed must be
ext4 images (mkfs.ext4 -d DIR FILE SIZE makes one), the initrd a cpio archive
(newc), bare or compressed; symlinks are followed and the files they lead to
recorded. The kernel must be installed or in the kernel catalog.`,
		Args: exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			var err error
			for _, p := range []*string{&req.Rootfs, &req.WorkSeed, &req.Initrd, &req.Modules} {
				if *p, err = absPath(*p); err != nil {
					return err
				}
			}
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var im rpc.Image
			if err := c.Do(cmd.Context(), "POST", "/v1/images/register", req, &im); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "registered unmanaged image %s (%s)\n", im.Name, im.Rootfs)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Rootfs, "rootfs", "", "ext4 root filesystem image (required)")
	f.StringVar(&req.Kernel, "kernel", "", "kernel to boot it with: an installed or catalog kernel")
	f.StringVar(&req.WorkSeed, "work-seed", "", "ext4 image that seeds each VM's work disk")
	f.StringVar(&req.Initrd, "initrd", "", "initrd (cpio, bare or compressed) to boot with instead of the kernel's")
	f.StringVar(&req.Modules, "modules", "", "kernel module tree for the guest")
	_ = cmd.MarkFlagRequired("rootfs")
	return cmd
}

func (a *app) newImagePromoteCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Copy an unmanaged image into managed artefacts",
		Long: `Copy an unmanaged image's files into banger's state dir, verify each copy
against its source, and make the image managed. Your files are only read.`,
		Args: exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/images/"+pathSegment(args[0])+"/promote", nil, detach)
			return err
		},
	}
	addDetachFlag(cmd, &detach)
	return cmd
}

func (a *app) newImageListCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List images",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var ims []rpc.Image
			if err := c.Do(cmd.Context(), "GET", "/v1/images", nil, &ims); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, ims)
			}
			tw := newTable(a.stdout, "NAME", "KERNEL", "MANAGED", "SIZE", "ORIGIN", "CREATED")
			for _, im := range ims {
				row(tw, im.Name, orDash(im.Kernel), yesNo(im.Managed), humanize.IBytes(uint64(im.SizeBytes)), orDash(im.OriginKind), ago(im.CreatedAt))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newImageInspectCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show an image in detail",
		Args:  exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var im rpc.Image
			if err := c.Do(cmd.Context(), "GET", "/v1/images/"+pathSegment(args[0]), nil, &im); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, im)
			}
			tw := newTable(a.stdout, "FIELD", "VALUE")
			row(tw, "name", im.Name)
			row(tw, "id", im.ID)
			row(tw, "managed", yesNo(im.Managed))
			row(tw, "rootfs", im.Rootfs)
			row(tw, "size", humanize.IBytes(uint64(im.SizeBytes)))
			row(tw, "work seed", orDash(im.WorkSeed))
			row(tw, "kernel", orDash(im.Kernel))
			row(tw, "initrd", orDash(im.Initrd))
			row(tw, "modules", orDash(im.Modules))
			row(tw, "digest", orDash(im.Digest))
			row(tw, "origin", orDash(im.OriginKind)+" "+im.OriginRef)
			row(tw, "created", im.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

// newRemoveCmd removes images or kernels by name, one request each; it goes
// on after a failure and fails at the end when any did.
func (a *app) newRemoveCmd(kind, plural string) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove " + plural + " (managed files go too; unmanaged files stay)",
		Args:  minArgs(1, "at least one "+kind+" name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			failed := 0
			for _, n := range args {
				if err := c.Do(cmd.Context(), "DELETE", "/v1/"+plural+"/"+pathSegment(n), nil, nil); err != nil {
					fmt.Fprintf(a.stderr, "banger: %s\n", oneLine(err))
					failed++
					continue
				}
				fmt.Fprintf(a.stdout, "removed %s %s\n", kind, n)
			}
			if failed > 0 {
				return exitError{ExitFailure}
			}
			return nil
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) newImagePullCmd() *cobra.Command {
	var req rpc.PullRequest
	var detach bool
	cmd := &cobra.Command{
		Use:   "pull NAME|REF [--kernel NAME]",
		Short: "Pull a catalog image, or any OCI image",
		Long: `Pull a catalog image by name (from its published bundle, or built locally
when none can be had), or any OCI image by reference (registry/repo:tag or
@digest), which becomes an ext4 root filesystem with banger's guest agent.
Pulling what is already there is instant.

A catalog image boots the kernel its catalog entry names. An OCI image boots
the kernel given with --kernel (an installed kernel or a catalog kernel),
else the kernel of the default image (default_image_name; for a catalog
image, the kernel its entry names). A catalog kernel that is missing is
pulled with the image.`,
		Args: exactArgs(1, "one catalog name or OCI reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			_, err := a.startOp(cmd.Context(), "/v1/images/pull", req, detach)
			return err
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "local name of an OCI image (default: from the reference)")
	cmd.Flags().BoolVar(&req.Insecure, "insecure", false, "allow a plain-HTTP registry")
	cmd.Flags().StringVar(&req.Kernel, "kernel", "", "kernel an OCI image boots (default: the default image's kernel)")
	addDetachFlag(cmd, &detach)
	return cmd
}

func (a *app) newImageBuildCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "build NAME",
		Short: "Build a catalog image locally from its recipe",
		Long: `Build a catalog image on this machine from its recipe instead of pulling a
bundle. debian-bookworm is built with debootstrap from this host's own Debian
mirror, which needs root and the debootstrap package.`,
		Args: exactArgs(1, "one catalog image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/images/build", rpc.PullRequest{Ref: args[0]}, detach)
			return err
		},
	}
	addDetachFlag(cmd, &detach)
	return cmd
}

func (a *app) newKernelPullCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "pull NAME",
		Short: "Pull a catalog kernel",
		Long: `Pull a catalog kernel: from its published bundle, or, when there is none,
by downloading the distribution's kernel package with this host's apt and
importing it.`,
		Args: exactArgs(1, "one kernel name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/kernels/pull", rpc.PullRequest{Ref: args[0]}, detach)
			return err
		},
	}
	addDetachFlag(cmd, &detach)
	return cmd
}
