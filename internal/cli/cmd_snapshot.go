package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

// newSnapshotCmd builds `banger snapshot` and its subcommands.
func (a *app) newSnapshotCmd() *cobra.Command {
	return group("snapshot", "List, inspect and remove VM snapshots (take one with `banger vm snapshot`)",
		a.newSnapshotListCmd(),
		a.newSnapshotInspectCmd(),
		a.newSnapshotRemoveCmd(),
	)
}

// newVMSnapshotCmd builds `banger vm snapshot`.
func (a *app) newVMSnapshotCmd() *cobra.Command {
	var req rpc.SnapshotVMRequest
	var detach bool
	cmd := &cobra.Command{
		Use:   "snapshot NAME [--name SNAP] [--stop]",
		Short: "Save a running VM's memory, devices and disks as a snapshot to start new VMs from",
		Long: `Pause the running VM NAME, save its memory and device state and a frozen
copy of its disks under the state dir, then resume it (or stop it with
--stop). New VMs resume from the snapshot with ` + "`banger vm create --from SNAP`" + `
or ` + "`banger vm run --from SNAP`" + `. Without --name the snapshot is called
NAME-<UTC time>; its name is printed when it is saved.`,
		Args: exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.startOp(cmd.Context(), "/v1/vms/"+pathSegment(args[0])+"/snapshot", req, detach)
			if err == nil && !detach {
				fmt.Fprintln(a.stdout, op.Target)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "snapshot name (default: NAME-<UTC time>)")
	cmd.Flags().BoolVar(&req.Stop, "stop", false, "stop the VM after saving instead of resuming it")
	addDetachFlag(cmd, &detach)
	return cmd
}

func (a *app) newSnapshotListCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List snapshots with the space they take",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var sns []rpc.Snapshot
			if err := c.Do(cmd.Context(), "GET", "/v1/snapshots", nil, &sns); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, sns)
			}
			tw := newTable(a.stdout, "NAME", "VM", "IMAGE", "VMM", "MEMORY", "SIZE", "STATE", "WARM", "CREATED")
			for _, s := range sns {
				row(tw, s.Name, orDash(s.VM), s.Image, s.VMM, humanize.IBytes(uint64(max(s.MemoryBytes, 0))),
					humanize.IBytes(uint64(max(s.SizeBytes, 0))), s.State, yesNo(s.Warm), ago(s.CreatedAt))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newSnapshotInspectCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a snapshot in detail, with what it can only be restored with",
		Args:  exactArgs(1, "one snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var s rpc.Snapshot
			if err := c.Do(cmd.Context(), "GET", "/v1/snapshots/"+pathSegment(args[0]), nil, &s); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, s)
			}
			tw := newTable(a.stdout, "FIELD", "VALUE")
			row(tw, "name", s.Name)
			row(tw, "id", s.ID)
			row(tw, "state", s.State)
			row(tw, "vm", strings.TrimSpace(orDash(s.VM)+" "+s.VMID))
			row(tw, "image", s.Image)
			row(tw, "kernel", s.Kernel)
			row(tw, "vmm", strings.TrimSpace(s.VMM+" "+s.VMMVersion))
			row(tw, "agent", orDash(s.AgentVersion))
			row(tw, "vcpus", strconv.Itoa(s.VCPUs))
			row(tw, "memory", humanize.IBytes(uint64(max(s.MemoryBytes, 0))))
			row(tw, "disk", humanize.IBytes(uint64(max(s.DiskBytes, 0))))
			row(tw, "size", humanize.IBytes(uint64(max(s.SizeBytes, 0))))
			row(tw, "dir", s.Dir)
			row(tw, "files", orDash(strings.Join(s.Files, " ")))
			row(tw, "warm", yesNo(s.Warm))
			row(tw, "created", s.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

func (a *app) newSnapshotRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove snapshots and their files",
		Args:  minArgs(1, "at least one snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			failed := 0
			for _, n := range args {
				if err := c.Do(cmd.Context(), "DELETE", "/v1/snapshots/"+pathSegment(n), nil, nil); err != nil {
					fmt.Fprintf(a.stderr, "banger: %s\n", oneLine(err))
					failed++
					continue
				}
				fmt.Fprintf(a.stdout, "removed snapshot %s\n", n)
			}
			if failed > 0 {
				return exitError{ExitFailure}
			}
			return nil
		},
	}
}
