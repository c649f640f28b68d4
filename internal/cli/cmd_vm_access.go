package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/guest/client"
)

// splitDash returns the arguments before and after "--".
func splitDash(cmd *cobra.Command, args []string) ([]string, []string) {
	if i := cmd.ArgsLenAtDash(); i >= 0 {
		return args[:i], args[i:]
	}
	return args, nil
}

// newVMExecCmd builds `banger vm exec`.
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
			return noEmptyArgs(cmd, before)
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

// parsePortPair parses HOSTPORT:GUESTPORT, or one PORT for both.
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

// newVMPortForwardCmd builds `banger vm port-forward`.
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

// pipeBoth copies between a and b both ways until both directions end.
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

// newVMSSHCmd builds `banger vm ssh`.
func (a *app) newVMSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "Open SSH to a VM as root, with its host key checked",
		Args: func(cmd *cobra.Command, args []string) error {
			before, _ := splitDash(cmd, args)
			if len(before) != 1 {
				return usagef("usage: banger vm ssh NAME [-- CMD...]")
			}
			return noEmptyArgs(cmd, before)
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
		if err := c.Do(ctx, "POST", "/v1/vms/"+pathSegment(name)+"/hostkeys", nil, nil); err != nil {
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

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
