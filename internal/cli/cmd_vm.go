package cli

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/config"
	"banger/internal/daemon/consolelog"
	"banger/internal/guest/client"
	"banger/internal/guest/tarx"
	"banger/internal/rpc"
)

func (a *app) newVMCmd() *cobra.Command {
	return group("vm", "Create, run and manage microVMs",
		a.newVMRunCmd(),
		a.newVMCreateCmd(),
		a.newVMStartCmd(),
		a.newVMStopCmd(),
		a.newVMRestartCmd(),
		a.newVMRemoveCmd(),
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
}

func (f *vmFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "VM name (default: generated)")
	fl.IntVar(&f.cpus, "cpus", 0, "vCPUs (default: default_vcpus)")
	fl.StringVar(&f.memory, "memory", "", "memory, e.g. 2GiB (default: default_memory)")
	fl.StringVar(&f.disk, "disk", "", "root disk size, e.g. 20GiB; the guest grows its filesystem to it (default: default_disk_size)")
	fl.StringVar(&f.vmm, "vmm", "", "auto, firecracker or qemu (default: vmm)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a guest port on the host, HOSTPORT:GUESTPORT (repeatable)")
}

func (f *vmFlags) request(image string, start bool) (rpc.CreateVMRequest, error) {
	req := rpc.CreateVMRequest{Name: f.name, Image: image, VCPUs: f.cpus, VMM: f.vmm, Start: start, Publish: f.publish}
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

func (a *app) getVM(ctx context.Context, name string) (rpc.VM, error) {
	c, err := a.daemon(ctx)
	if err != nil {
		return rpc.VM{}, err
	}
	var v rpc.VM
	err = c.Do(ctx, "GET", "/v1/vms/"+url.PathEscape(name), nil, &v)
	return v, err
}

func (a *app) newVMCreateCmd() *cobra.Command {
	var f vmFlags
	var detach bool
	cmd := &cobra.Command{
		Use:   "create [IMAGE]",
		Short: "Create a VM without starting it",
		Long:  "Create a VM from IMAGE (default: default_image_name, pulled on a miss) with its own copy-on-write root disk.",
		Args:  maxArgs(1, "one image name"),
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

func firstOr(args []string, d string) string {
	if len(args) > 0 {
		return args[0]
	}
	return d
}

func (a *app) newVMStartCmd() *cobra.Command {
	var vmm string
	var detach bool
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a VM and wait until its guest agent is ready",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/vms/"+url.PathEscape(args[0])+"/start", rpc.StartVMRequest{VMM: vmm}, detach)
			return err
		},
	}
	cmd.Flags().StringVar(&vmm, "vmm", "", "auto, firecracker or qemu for this start")
	addDetachFlag(cmd, &detach)
	return cmd
}

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
			if err := c.Do(cmd.Context(), "POST", "/v1/vms/"+url.PathEscape(args[0])+"/stop", nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %s\n", v.Name, v.State)
			return nil
		},
	}
}

func (a *app) newVMRestartCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop and start a VM",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.startOp(cmd.Context(), "/v1/vms/"+url.PathEscape(args[0])+"/restart", nil, detach)
			return err
		},
	}
	addDetachFlag(cmd, &detach)
	return cmd
}

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
				if err := c.Do(cmd.Context(), "DELETE", "/v1/vms/"+url.PathEscape(n)+q, nil, nil); err != nil {
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

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

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
			p := "/v1/vms/" + url.PathEscape(args[0]) + "/logs"
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

// splitDash returns the arguments before and after "--".
func splitDash(cmd *cobra.Command, args []string) ([]string, []string) {
	if i := cmd.ArgsLenAtDash(); i >= 0 {
		return args[:i], args[i:]
	}
	return args, nil
}

func (a *app) newVMExecCmd() *cobra.Command {
	var tty bool
	var workdir string
	var env []string
	cmd := &cobra.Command{
		Use:   "exec NAME [-t] -- CMD...",
		Short: "Run a command in a VM through its guest agent; its exit code is banger's",
		Args: func(cmd *cobra.Command, args []string) error {
			before, after := splitDash(cmd, args)
			if len(before) != 1 || len(after) == 0 {
				return usagef("usage: banger vm exec NAME -- CMD...")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitDash(cmd, args)
			c, err := a.agentClient(cmd.Context(), before[0])
			if err != nil {
				return err
			}
			return a.runInGuest(cmd.Context(), c, client.ExecRequest{Argv: after, Dir: workdir, Env: env}, tty)
		},
	}
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run on a pseudo-terminal (interactive programs)")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the guest")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "KEY=VALUE to set (repeatable)")
	return cmd
}

// runInGuest runs req with this process's stdio, forwarding Ctrl-C (as
// SIGINT, or as a keystroke on a pty) and window size changes, and exits
// with the command's exit code.
func (a *app) runInGuest(ctx context.Context, c *client.Client, req client.ExecRequest, tty bool) error {
	var restore func()
	if tty {
		f, ok := a.stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return usagef("-t needs a terminal on stdin")
		}
		cols, rows, err := term.GetSize(int(f.Fd()))
		if err == nil {
			req.Rows, req.Cols = uint16(rows), uint16(cols)
		}
		req.PTY = true
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return err
		}
		restore = func() { _ = term.Restore(int(f.Fd()), old) }
		defer restore()
	}
	stdin := a.stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	p, err := c.Start(ctx, req, stdin, a.stdout, a.stderr)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				switch s {
				case syscall.SIGWINCH:
					if f, ok := a.stdin.(*os.File); ok && tty {
						if cols, rows, err := term.GetSize(int(f.Fd())); err == nil {
							_ = p.Resize(uint16(rows), uint16(cols))
						}
					}
				case os.Interrupt:
					_ = p.Signal("SIGINT")
				case syscall.SIGTERM:
					_ = p.Signal("SIGTERM")
				}
			}
		}
	}()
	st, err := p.Wait()
	if restore != nil {
		restore()
	}
	if err != nil {
		return err
	}
	if st.Code != 0 {
		return exitError{st.Code}
	}
	return nil
}

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

func parsePortPair(s string) (host, guest int, err error) {
	hs, gs, ok := strings.Cut(s, ":")
	if !ok {
		hs, gs = s, s
	}
	host, err1 := strconv.Atoi(hs)
	guest, err2 := strconv.Atoi(gs)
	if err1 != nil || err2 != nil || host < 0 || host > 65535 || guest < 1 || guest > 65535 {
		return 0, 0, usagef("%q is not HOSTPORT:GUESTPORT", s)
	}
	return host, guest, nil
}

func (a *app) newVMPortForwardCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "port-forward NAME HOSTPORT:GUESTPORT",
		Short: "Forward a host port to a port in a VM, through the guest agent, until Ctrl-C",
		Args:  exactArgs(2, "a VM name and HOSTPORT:GUESTPORT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			hp, gp, err := parsePortPair(args[1])
			if err != nil {
				return err
			}
			c, err := a.agentClient(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(hp)))
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "forwarding %s -> %s:%d (Ctrl-C to stop)\n", ln.Addr(), args[0], gp)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serveForward(ctx, ln, c, uint16(gp), a.stderr)
		},
	}
	cmd.Flags().StringVar(&addr, "address", "127.0.0.1", "host address to listen on")
	return cmd
}

// serveForward accepts host connections until ctx ends and splices each to
// a new forward stream into the guest.
func serveForward(ctx context.Context, ln net.Listener, c *client.Client, port uint16, errw io.Writer) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			g, err := c.Forward(ctx, port)
			if err != nil {
				fmt.Fprintf(errw, "banger: forward to guest port %d: %v\n", port, err)
				return
			}
			defer g.Close()
			pipeBoth(conn, g)
		}()
	}
}

func pipeBoth(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// newVMProxyCmd splices stdin and stdout to a guest port; ssh uses it as
// its ProxyCommand, so SSH works whether or not the VM has a routable
// address.
func (a *app) newVMProxyCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "proxy NAME PORT",
		Short:  "Connect stdin and stdout to a port in a VM (for ssh's ProxyCommand)",
		Hidden: true,
		Args:   exactArgs(2, "a VM name and a port"),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[1])
			if err != nil || port < 1 || port > 65535 {
				return usagef("%q is not a port", args[1])
			}
			c, err := a.agentClient(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g, err := c.Forward(cmd.Context(), uint16(port))
			if err != nil {
				return err
			}
			defer g.Close()
			done := make(chan struct{}, 2)
			go func() {
				_, _ = io.Copy(g, a.stdin)
				if cw, ok := g.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
				done <- struct{}{}
			}()
			go func() { _, _ = io.Copy(a.stdout, g); done <- struct{}{} }()
			<-done
			return nil
		},
	}
}

func (a *app) newVMSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "Open SSH to a VM as root, with its host key checked",
		Args: func(cmd *cobra.Command, args []string) error {
			before, _ := splitDash(cmd, args)
			if len(before) != 1 {
				return usagef("usage: banger vm ssh NAME [-- CMD...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitDash(cmd, args)
			return a.ssh(cmd.Context(), before[0], after)
		},
	}
}

// ssh runs the system's ssh client against the VM through the agent's port
// forward, with banger's key and the VM's recorded host key, never asking.
func (a *app) ssh(ctx context.Context, name string, command []string) error {
	v, err := a.getVM(ctx, name)
	if err != nil {
		return err
	}
	if v.State != "running" {
		return fmt.Errorf("VM %s is %s, not running: start it (banger vm start %s)", name, v.State, name)
	}
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		return errors.New("no ssh client on PATH: install openssh-client, or use banger vm exec")
	}
	if err := a.waitForSSH(ctx, name); err != nil {
		return err
	}
	// Record the host keys sshd serves now (an image may make them at first
	// boot, after the guest reported ready).
	if c, err := a.daemon(ctx); err == nil {
		if err := c.Do(ctx, "POST", "/v1/vms/"+url.PathEscape(name)+"/hostkeys", nil, nil); err != nil {
			return err
		}
	}
	l, err := a.config()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	proxy := shellQuote(self)
	if a.configPath != "" {
		proxy += " --config " + shellQuote(a.configPath)
	}
	if a.socket != "" {
		proxy += " --socket " + shellQuote(a.socket)
	}
	proxy += " vm proxy " + shellQuote(name) + " 22"
	args := []string{
		"-i", l.Config.SSHKeyPath,
		"-o", "IdentitiesOnly=yes",
		"-o", "ProxyCommand=" + proxy,
		"-o", "HostKeyAlias=" + name + ".banger",
		"-o", "UserKnownHostsFile=" + v.KnownHosts,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR",
		"root@" + name + ".banger",
	}
	if len(command) > 0 {
		args = append(args, "--")
		args = append(args, command...)
	} else if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		args = append([]string{"-t"}, args...)
	}
	c := exec.CommandContext(ctx, sshBin, args...)
	c.Stdin, c.Stdout, c.Stderr = a.stdin, a.stdout, a.stderr
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError{ee.ExitCode()}
	}
	return err
}

// sshWait bounds how long vm ssh waits for the guest's sshd, which may
// start a little after the agent reports the guest ready.
const sshWait = 60 * time.Second

// waitForSSH waits until something accepts on port 22 in the guest.
func (a *app) waitForSSH(ctx context.Context, name string) error {
	c, err := a.agentClient(ctx, name)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(sshWait)
	for {
		g, err := c.Forward(ctx, 22)
		if err == nil {
			g.Close()
			return nil
		}
		if !strings.Contains(err.Error(), "refused") || time.Now().After(deadline) {
			return fmt.Errorf("no SSH server answers on port 22 in VM %s (%v): the image may have no sshd; use banger vm exec %s -- CMD", name, err, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (a *app) newVMRunCmd() *cobra.Command {
	var f vmFlags
	var rm bool
	var workspace string
	cmd := &cobra.Command{
		Use:   "run [IMAGE] [flags] [-- CMD...]",
		Short: "Create and start a VM, then open SSH in it or run CMD",
		Long: `Create a VM from IMAGE (default: default_image_name; image and kernel are
pulled on a miss), start it, wait for its guest agent, then open an SSH
session, or run CMD through the agent and exit with its exit code.
--workspace copies a host directory to /workspace first; --rm removes the
VM afterwards.`,
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
			a.firstRunNotice(ctx, req.Image)
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

func (a *app) removeQuietly(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.daemon(ctx)
	if err != nil {
		return
	}
	if err := c.Do(ctx, "DELETE", "/v1/vms/"+url.PathEscape(name)+"?force=1", nil, nil); err != nil {
		a.warnf("remove VM %s: %v", name, err)
	}
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
