package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"banger/internal/guest/proto"

	"golang.org/x/sys/unix"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// process is a started command and the host ends of its stdio.
type process struct {
	cmd   *exec.Cmd
	stdin *os.File // pipe write end, or the pty master
	pty   *os.File // pty master, nil without a pty
	// outputs are read ends pumped to the host, with their frame types.
	outputs []*os.File
	types   []proto.Type
	exited  atomic.Bool
}

func (s *server) exec(ctx context.Context, c net.Conn, pc *proto.Conn, f proto.Frame) error {
	var req proto.ExecRequest
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	cmd, err := command(req)
	if err != nil {
		return proto.Errorf(proto.CodeFailed, "exec %s: %v", req.Argv[0], err)
	}
	var p *process
	if req.PTY {
		p, err = startPTY(cmd, req.Rows, req.Cols)
	} else {
		p, err = startPipes(cmd)
	}
	if err != nil {
		return proto.Errorf(proto.CodeFailed, "exec %s: %v", req.Argv[0], err)
	}
	if err := pc.WriteJSON(proto.TypeOK, struct{}{}); err != nil {
		p.kill(unix.SIGKILL)
	}

	var pumps sync.WaitGroup
	for i, out := range p.outputs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pump(out, pc.Writer, p.types[i])
		}()
	}
	var hostErr error
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		hostErr = s.execInput(p, pc.Reader)
	}()

	_ = cmd.Wait()
	p.exited.Store(true)
	if p.pty == nil {
		p.stdin.Close()
	}
	pumpsDone := make(chan struct{})
	go func() { pumps.Wait(); close(pumpsDone) }()
	t := time.NewTimer(s.opts.ExecWaitDelay)
	select {
	case <-pumpsDone:
		t.Stop()
	case <-t.C:
		// Something the command left behind still holds its output open.
		for _, out := range p.outputs {
			out.Close()
		}
		<-pumpsDone
	}
	for _, out := range p.outputs {
		out.Close()
	}

	// Stop the input loop before reporting, so a protocol error it found
	// is reported instead of an exit status.
	var exitErr error
	select {
	case <-loopDone:
		exitErr = hostErr
	default:
	}
	if exitErr == nil {
		exitErr = pc.WriteJSON(proto.TypeExit, exitOf(cmd.ProcessState))
	} else if proto.IsFrameError(exitErr) {
		_ = pc.WriteError(proto.ErrorFor(exitErr))
	}
	c.Close()
	<-loopDone
	if p.pty != nil {
		p.stdin.Close()
	}
	if exitErr != nil && !proto.IsFrameError(exitErr) {
		return nil // the host went away; nobody to tell
	}
	if exitErr != nil {
		s.opts.Logf("agent: exec %s: %v", req.Argv[0], exitErr)
	}
	return nil
}

// execInput applies the host's frames to a running command until the stream
// ends. If the host goes away or misbehaves before the command exits, the
// command's process group is killed.
func (s *server) execInput(p *process, r *proto.Reader) error {
	for {
		f, err := r.Next()
		if err != nil {
			if !p.exited.Load() {
				p.kill(unix.SIGKILL)
			}
			if proto.IsFrameError(err) {
				return err
			}
			return nil
		}
		switch f.Type {
		case proto.TypeStdin:
			// Errors mean the command closed its stdin; the bytes are dropped
			// as a pipe would drop them.
			_, _ = p.stdin.Write(f.Payload)
		case proto.TypeEOF:
			if p.pty != nil {
				_, _ = p.pty.Write([]byte{4}) // ^D: end of input on a terminal
			} else {
				p.stdin.Close()
			}
		case proto.TypeResize:
			var rs proto.Resize
			if err := proto.DecodeJSON(f, &rs); err != nil {
				p.kill(unix.SIGKILL)
				return err
			}
			if p.pty != nil {
				if err := setWinsize(p.pty, rs.Rows, rs.Cols); err != nil {
					s.opts.Logf("agent: resize pty: %v", err)
				}
			}
		case proto.TypeSignal:
			var sg proto.Signal
			if err := proto.DecodeJSON(f, &sg); err != nil {
				p.kill(unix.SIGKILL)
				return err
			}
			sig, err := ParseSignal(sg.Name)
			if err != nil {
				s.opts.Logf("agent: %v", err)
				continue
			}
			if !p.exited.Load() {
				p.kill(sig)
			}
		default:
			p.kill(unix.SIGKILL)
			return &proto.MalformedFrameError{Reason: fmt.Sprintf("unexpected %s frame during exec", f.Type)}
		}
	}
}

// ParseSignal turns "TERM", "SIGTERM" or "15" into a signal.
func ParseSignal(name string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	up := strings.ToUpper(name)
	if !strings.HasPrefix(up, "SIG") {
		up = "SIG" + up
	}
	if sig := unix.SignalNum(up); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q; use a name such as TERM, INT or KILL", name)
}

// kill sends sig to the command's process group: the terminal's foreground
// group with a pty, else the group the command leads.
func (p *process) kill(sig syscall.Signal) {
	pid := p.cmd.Process.Pid
	if p.pty != nil {
		if pg, err := foregroundGroup(p.pty); err == nil && pg > 0 {
			_ = unix.Kill(-pg, sig)
			if sig != unix.SIGKILL {
				return
			}
		}
	}
	if err := unix.Kill(-pid, sig); err != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// pump forwards everything read from f as frames of type t.
func pump(f *os.File, w *proto.Writer, t proto.Type) {
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if werr := w.WriteFrame(t, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func exitOf(st *os.ProcessState) proto.Exit {
	if st == nil {
		return proto.Exit{Code: -1}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return proto.Exit{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return proto.Exit{Code: st.ExitCode()}
}

func startPipes(cmd *exec.Cmd) (*process, error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, err
	}
	inR.Close()
	outW.Close()
	errW.Close()
	return &process{
		cmd:     cmd,
		stdin:   inW,
		outputs: []*os.File{outR, errR},
		types:   []proto.Type{proto.TypeStdout, proto.TypeStderr},
	}, nil
}

func startPTY(cmd *exec.Cmd, rows, cols uint16) (*process, error) {
	master, tty, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("open a pseudo-terminal: %w", err)
	}
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	if err := setWinsize(master, rows, cols); err != nil {
		master.Close()
		tty.Close()
		return nil, fmt.Errorf("set terminal size: %w", err)
	}
	if cr := cmd.SysProcAttr.Credential; cr != nil {
		_ = tty.Chown(int(cr.Uid), int(cr.Gid))
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err = cmd.Start()
	tty.Close()
	if err != nil {
		master.Close()
		return nil, err
	}
	return &process{
		cmd:     cmd,
		stdin:   master,
		pty:     master,
		outputs: []*os.File{master},
		types:   []proto.Type{proto.TypeStdout},
	}, nil
}

// command builds the exec.Cmd for req: its user, environment, directory and
// the program found on the command's own PATH.
func command(req proto.ExecRequest) (*exec.Cmd, error) {
	id, err := lookupUser(req.User)
	if err != nil {
		return nil, err
	}
	env := buildEnv(id, req)
	dir := req.Dir
	if dir == "" {
		dir = "/"
		if fi, err := os.Stat(id.home); err == nil && fi.IsDir() {
			dir = id.home
		}
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("working directory %s is not a directory", dir)
	}
	prog, err := lookPath(req.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	return &exec.Cmd{
		Path:        prog,
		Args:        req.Argv,
		Env:         env,
		Dir:         dir,
		SysProcAttr: &syscall.SysProcAttr{Credential: id.cred},
	}, nil
}

type identity struct {
	name, home, shell string
	cred              *syscall.Credential // nil: run as the agent's own user
}

func lookupUser(name string) (identity, error) {
	if name == "" {
		id := identity{home: "/"}
		if u, err := user.Current(); err == nil {
			id.name, id.home = u.Username, u.HomeDir
			id.shell = shellOf(u.Uid)
		}
		return id, nil
	}
	var u *user.User
	var err error
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		u, err = user.LookupId(name)
		if err != nil {
			// A bare uid with no passwd entry is still a valid identity.
			u = &user.User{Uid: name, Gid: name, Username: name, HomeDir: "/"}
			err = nil
		}
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return identity{}, fmt.Errorf("user %q: %w", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	id := identity{name: u.Username, home: u.HomeDir, shell: shellOf(u.Uid)}
	if euid := os.Geteuid(); euid != 0 {
		if uint64(euid) != uid {
			return identity{}, fmt.Errorf("the agent runs as uid %d, not root, and cannot switch to user %q", euid, name)
		}
		return id, nil
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	id.cred = cred
	return id, nil
}

// shellOf reads the login shell of uid from /etc/passwd; os/user does not
// expose it.
func shellOf(uid string) string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimRight(line, "\n"), ":")
		if len(f) == 7 && f[2] == uid {
			return f[6]
		}
	}
	return ""
}

// buildEnv lays the request's variables over a small login-like base.
func buildEnv(id identity, req proto.ExecRequest) []string {
	base := []string{"PATH=" + defaultPath, "HOME=" + id.home}
	if id.name != "" {
		base = append(base, "USER="+id.name, "LOGNAME="+id.name)
	}
	if id.shell != "" {
		base = append(base, "SHELL="+id.shell)
	}
	if req.PTY {
		base = append(base, "TERM=xterm-256color")
	}
	env := make([]string, 0, len(base)+len(req.Env))
	idx := map[string]int{}
	for _, kv := range append(base, req.Env...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			env[i] = kv
			continue
		}
		idx[k] = len(env)
		env = append(env, kv)
	}
	return env
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath finds prog on path, the PATH the command will run with.
func lookPath(prog, path string) (string, error) {
	if strings.Contains(prog, "/") {
		return prog, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, prog)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH %s", prog, path)
}
