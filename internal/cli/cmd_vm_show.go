package cli

import (
	"cmp"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"banger/internal/daemon/consolelog"
	"banger/internal/rpc"
)

// newVMListCmd builds `banger vm ls`.
func (a *app) newVMListCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List VMs",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var vms []rpc.VM
			if err := c.Do(cmd.Context(), "GET", "/v1/vms", nil, &vms); err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, vms)
			}
			tw := newTable(a.stdout, "NAME", "STATE", "IMAGE", "VMM", "CPUS", "MEMORY", "DISK", "CREATED")
			for _, v := range vms {
				row(tw, v.Name, v.State, v.Image, orDash(v.VMM), strconv.Itoa(v.VCPUs), humanize.IBytes(uint64(v.MemoryBytes)),
					humanize.IBytes(uint64(v.DiskBytes)), ago(v.CreatedAt))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

// newVMInspectCmd builds `banger vm inspect`.
func (a *app) newVMInspectCmd() *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a VM in detail, with its VMM and why it was chosen",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.getVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, v)
			}
			tw := newTable(a.stdout, "FIELD", "VALUE")
			row(tw, "name", v.Name)
			row(tw, "id", v.ID)
			row(tw, "state", v.State)
			row(tw, "image", v.Image)
			row(tw, "kernel", v.Kernel)
			row(tw, "vcpus", strconv.Itoa(v.VCPUs))
			row(tw, "memory", humanize.IBytes(uint64(v.MemoryBytes)))
			row(tw, "disk", humanize.IBytes(uint64(v.DiskBytes))+" ("+v.COW+") "+v.Disk)
			vmmText := orDash(v.VMM)
			if v.VMMRequested != "" && v.VMMRequested != v.VMM {
				vmmText += " (asked: " + v.VMMRequested + ")"
			}
			row(tw, "vmm", vmmText)
			row(tw, "vmm reason", orDash(v.VMMReason))
			if v.PID > 0 {
				row(tw, "pid", strconv.Itoa(v.PID))
			}
			if v.Network != "" {
				nw := v.Network
				if v.IP != "" {
					nw += " " + v.IP + " (" + v.Tap + "), " + v.Name + ".banger"
				}
				row(tw, "network", nw)
			}
			if v.Publish != "" {
				row(tw, "published", v.Publish)
			}
			if v.SSHPort > 0 {
				row(tw, "ssh", "127.0.0.1:"+strconv.Itoa(v.SSHPort))
			}
			row(tw, "console", orDash(v.ConsoleLog))
			row(tw, "created", v.CreatedAt.Local().Format(time.RFC3339))
			if !v.StartedAt.IsZero() {
				row(tw, "started", v.StartedAt.Local().Format(time.RFC3339))
			}
			if !v.StoppedAt.IsZero() {
				row(tw, "stopped", v.StoppedAt.Local().Format(time.RFC3339))
			}
			if v.LastError != "" {
				row(tw, "last error", firstLineOf(v.LastError))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &out)
	return cmd
}

// firstLineOf returns s up to its first line break.
func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// newVMLogsCmd builds `banger vm logs`.
func (a *app) newVMLogsCmd() *cobra.Command {
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console",
		Long: `Print a VM's serial console. What the guest wrote is printed without
escape sequences and control characters (newlines and tabs kept); --raw
prints its bytes exactly.`,
		Args: exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			p := "/v1/vms/" + pathSegment(args[0]) + "/logs"
			if follow {
				p += "?follow=1"
			}
			if raw {
				return c.Raw(cmd.Context(), "GET", p, a.stdout)
			}
			// The console is the guest's: no escape sequence of it
			// reaches the terminal.
			w := consolelog.NewWriter(a.stdout)
			err = c.Raw(cmd.Context(), "GET", p, w)
			return cmp.Or(err, w.Close())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing while the VM runs")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the console's bytes as they are, escape sequences and all")
	return cmd
}
