package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/config"
	"banger/internal/guest/client"
	"banger/internal/rpc"
)

// newVMCmd builds `banger vm` and its subcommands.
func (a *app) newVMCmd() *cobra.Command {
	return group("vm", "Create, run and manage microVMs",
		a.newVMRunCmd(),
		a.newVMCreateCmd(),
		a.newVMStartCmd(),
		a.newVMStopCmd(),
		a.newVMRestartCmd(),
		a.newVMRemoveCmd(),
		a.newVMSnapshotCmd(),
		a.newVMListCmd(),
		a.newVMInspectCmd(),
		a.newVMLogsCmd(),
		a.newVMSSHCmd(),
		a.newVMExecCmd(),
		a.newVMCopyCmd(),
		a.newVMPortForwardCmd(),
		a.newVMProxyCmd(),
	)
}

// vmFlags are the sizing flags of vm create and vm run.
type vmFlags struct {
	name, vmm    string
	cpus         int
	memory, disk string
	publish      []string
	from         string // a snapshot to resume instead of an image to boot
}

// add registers the sizing flags on cmd.
func (f *vmFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "VM name (default: generated)")
	fl.IntVar(&f.cpus, "cpus", 0, "vCPUs (default: default_vcpus)")
	fl.StringVar(&f.memory, "memory", "", "memory, e.g. 2GiB (default: default_memory)")
	fl.StringVar(&f.disk, "disk", "", "root disk size, e.g. 20GiB; the guest grows its filesystem to it (default: default_disk_size)")
	fl.StringVar(&f.vmm, "vmm", "", "auto, firecracker or qemu (default: vmm)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a guest port on the host, HOSTPORT:GUESTPORT (repeatable)")
	fl.StringVar(&f.from, "from", "", "resume from snapshot SNAP instead of booting an image (its image, vCPUs, memory, disk and VMM are the snapshot's)")
}

// request builds the create request for image from the flags, checking
// the -p values, parsing the sizes, and refusing with --from what the
// snapshot fixes.
func (f *vmFlags) request(image string, start bool) (rpc.CreateVMRequest, error) {
	req := rpc.CreateVMRequest{Name: f.name, Image: image, VCPUs: f.cpus, VMM: f.vmm, Start: start, Publish: f.publish, From: f.from}
	if f.from != "" {
		if image != "" {
			return req, usagef("--from %s and the image %s both say what to start: a VM made from a snapshot runs the snapshot's image; drop one", f.from, image)
		}
		var set []string
		for _, s := range []struct {
			flag string
			set  bool
		}{{"--cpus", f.cpus != 0}, {"--memory", f.memory != ""}, {"--disk", f.disk != ""}, {"--vmm", f.vmm != ""}} {
			if s.set {
				set = append(set, s.flag)
			}
		}
		if len(set) > 0 {
			return req, usagef("--from %s cannot be combined with %s: a snapshot resumes with its own vCPUs, memory, disk and VMM", f.from, strings.Join(set, ", "))
		}
	}
	for _, p := range f.publish {
		if _, _, err := parsePortPair(p); err != nil || !strings.Contains(p, ":") {
			return req, usagef("-p %q is not HOSTPORT:GUESTPORT", p)
		}
	}
	for _, s := range []struct {
		flag, v string
		dst     *int64
	}{{"--memory", f.memory, &req.Memory}, {"--disk", f.disk, &req.Disk}} {
		if s.v == "" {
			continue
		}
		sz, err := config.ParseSize(s.v)
		if err != nil {
			return req, usagef("%s: %v", s.flag, err)
		}
		*s.dst = int64(sz)
	}
	return req, nil
}

// getVM asks the daemon for the VM name.
func (a *app) getVM(ctx context.Context, name string) (rpc.VM, error) {
	c, err := a.daemon(ctx)
	if err != nil {
		return rpc.VM{}, err
	}
	var v rpc.VM
	err = c.Do(ctx, "GET", "/v1/vms/"+pathSegment(name), nil, &v)
	return v, err
}

// newVMCreateCmd builds `banger vm create`.
func (a *app) newVMCreateCmd() *cobra.Command {
	var f vmFlags
	var detach bool
	cmd := &cobra.Command{
		Use:   "create [IMAGE | --from SNAP]",
		Short: "Create a VM without starting it",
		Long: `Create a VM from IMAGE (default: default_image_name, pulled on a miss) with
its own copy-on-write root disk. With --from SNAP the VM is made from the
snapshot's frozen disks instead, and its first start resumes the saved guest.`,
		Args: maxArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(firstOr(args, ""), false)
			if err != nil {
				return err
			}
			op, err := a.startOp(cmd.Context(), "/v1/vms", req, detach)
			if err == nil && !detach {
				fmt.Fprintln(a.stdout, op.Target)
			}
			return err
		},
	}
	f.add(cmd)
	addDetachFlag(cmd, &detach)
	return cmd
}

// firstOr returns args[0], or d when args is empty.
func firstOr(args []string, d string) string {
	if len(args) > 0 {
		return args[0]
	}
	return d
}

// newVMStartCmd builds `banger vm start`.
func (a *app) newVMStartCmd() *cobra.Command {
	var vmm string
	var detach bool
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a VM and wait until its guest agent is ready",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/vms/"+pathSegment(args[0])+"/start", rpc.StartVMRequest{VMM: vmm}, detach)
			return err
		},
	}
	cmd.Flags().StringVar(&vmm, "vmm", "", "auto, firecracker or qemu for this start")
	addDetachFlag(cmd, &detach)
	return cmd
}

// newVMStopCmd builds `banger vm stop`.
func (a *app) newVMStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop a running VM (guest poweroff, then the VMM's own escalation)",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var v rpc.VM
			if err := c.Do(cmd.Context(), "POST", "/v1/vms/"+pathSegment(args[0])+"/stop", nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %s\n", v.Name, v.State)
			return nil
		},
	}
}

// newVMRestartCmd builds `banger vm restart`.
func (a *app) newVMRestartCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop and start a VM",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/vms/"+pathSegment(args[0])+"/restart", nil, detach)
			return err
		},
	}
	addDetachFlag(cmd, &detach)
	return cmd
}

// newVMRemoveCmd builds `banger vm rm`.
func (a *app) newVMRemoveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove VMs with their disks (-f stops running ones first)",
		Args:  minArgs(1, "at least one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			q := ""
			if force {
				q = "?force=1"
			}
			failed := 0
			for _, n := range args {
				if err := c.Do(cmd.Context(), "DELETE", "/v1/vms/"+pathSegment(n)+q, nil, nil); err != nil {
					fmt.Fprintf(a.stderr, "banger: %s\n", oneLine(err))
					failed++
					continue
				}
				fmt.Fprintf(a.stdout, "removed VM %s\n", n)
			}
			if failed > 0 {
				return exitError{ExitFailure}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop running VMs before removing them")
	return cmd
}

// newVMRunCmd builds `banger vm run`: create, start, then SSH or run a
// command.
func (a *app) newVMRunCmd() *cobra.Command {
	var f vmFlags
	var rm bool
	var workspace string
	cmd := &cobra.Command{
		Use:   "run [IMAGE | --from SNAP] [flags] [-- CMD...]",
		Short: "Create and start a VM, then open SSH in it or run CMD",
		Long: `Create a VM from IMAGE (default: default_image_name; image and kernel are
pulled on a miss), start it, wait for its guest agent, then open an SSH
session, or run CMD through the agent and exit with its exit code.
--workspace copies a host directory to /workspace first; --rm removes the
VM afterwards. With --from SNAP the VM resumes from the snapshot instead of
booting.`,
		Args: func(cmd *cobra.Command, args []string) error {
			before, _ := splitDash(cmd, args)
			if len(before) > 1 {
				return usagef("vm run takes at most one image before --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			before, command := splitDash(cmd, args)
			req, err := f.request(firstOr(before, ""), true)
			if err != nil {
				return err
			}
			if workspace != "" {
				if fi, err := os.Stat(workspace); err != nil || !fi.IsDir() {
					return usagef("--workspace %s is not a directory", workspace)
				}
			}
			ctx := cmd.Context()
			if req.From == "" {
				a.firstRunNotice(ctx, req.Image)
			}
			op, err := a.startOp(ctx, "/v1/vms", req, false)
			name := op.Target
			if rm && name != "" {
				defer a.removeQuietly(name)
			}
			if err != nil {
				return err
			}
			if workspace != "" {
				c, err := a.agentClient(ctx, name)
				if err != nil {
					return err
				}
				if err := copyWorkspace(ctx, c, workspace); err != nil {
					return fmt.Errorf("copy the workspace into %s: %w", name, err)
				}
			}
			if len(command) > 0 {
				c, err := a.agentClient(ctx, name)
				if err != nil {
					return err
				}
				req := client.ExecRequest{Argv: command}
				if workspace != "" {
					req.Dir = "/workspace"
				}
				return a.runInGuest(ctx, c, req, false)
			}
			return a.ssh(ctx, name, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the session or command ends")
	cmd.Flags().StringVar(&workspace, "workspace", "", "host directory to copy to /workspace in the guest first")
	return cmd
}

// removeQuietly force-removes the VM name (vm run --rm), only warning
// when that fails.
func (a *app) removeQuietly(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.daemon(ctx)
	if err != nil {
		return
	}
	if err := c.Do(ctx, "DELETE", "/v1/vms/"+pathSegment(name)+"?force=1", nil, nil); err != nil {
		a.warnf("remove VM %s: %v", name, err)
	}
}
