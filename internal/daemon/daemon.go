package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/opstate"
	"banger/internal/daemon/sdnotify"
	"banger/internal/rpc"
	"banger/internal/store"
)

// Options configure one daemon run.
type Options struct {
	Config     config.Config
	ConfigPath string
	// Socket overrides <runtime_dir>/bangerd.sock.
	Socket string
	// Stderr receives a copy of the log unless Background is set (nil = os.Stderr).
	Stderr     io.Writer
	Background bool
	// DirectKinds are operation kinds that POST /v1/ops may start by name.
	// Production registers none; tests use it to drive operations end to end.
	DirectKinds map[string]opstate.Func
	// OnReady is called once the socket accepts requests.
	OnReady func(rpc.VersionInfo)
	// AdoptStore takes the store as this state dir's even when they do not
	// belong together (an empty, replaced or foreign store): see
	// store.Bind. VM directories it has no row for are moved aside.
	AdoptStore bool
}

// SocketPath is where the daemon for cfg listens unless overridden.
func SocketPath(cfg config.Config) string { return filepath.Join(cfg.RuntimeDir, "bangerd.sock") }

// LogPath is the daemon's log file for cfg.
func LogPath(cfg config.Config) string { return filepath.Join(cfg.StateDir, "bangerd.log") }

// StorePath is the database file for cfg.
func StorePath(cfg config.Config) string { return filepath.Join(cfg.StateDir, "banger.db") }

// Timeouts of the shutdown sequence.
const (
	opsShutdownTimeout  = 15 * time.Second
	httpShutdownTimeout = 5 * time.Second
)

// storeCheckInterval is how often the daemon checks that banger.db is still
// the file it opened (requests that change anything check it too).
var storeCheckInterval = 2 * time.Second

// Daemon is one running bangerd.
type Daemon struct {
	opts     Options
	log      *slog.Logger
	store    *store.Store
	ops      *opstate.Manager
	images   *imagemgr.Manager
	vms      *vmManager
	info     rpc.VersionInfo
	shutdown chan struct{}
}

// Run starts the daemon and serves until ctx ends or a client asks it to
// stop. Everything it set up is torn down before it returns.
func Run(ctx context.Context, o Options) (err error) {
	cfg := o.Config
	for _, dir := range []string{cfg.StateDir, cfg.RuntimeDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.release()
	rlock, err := lockRuntimeDir(cfg.RuntimeDir, lock)
	if err != nil {
		if le, ok := err.(*LockedError); ok {
			le.StateDir = cfg.StateDir
		}
		return err
	}
	defer rlock.release()

	logPath := LogPath(cfg)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	defer logFile.Close()
	log := newLogger(logFile, o, cfg.LogLevel)

	socket := o.Socket
	if socket == "" {
		socket = SocketPath(cfg)
	}
	st, err := openBoundStore(ctx, cfg, o.AdoptStore, log)
	if err != nil {
		return err
	}
	defer st.Close()
	storeLost := make(chan error, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchStore(watchCtx, st, storeLost)
	}()
	defer func() { stopWatch(); <-watched }()

	d := &Daemon{
		opts:     o,
		log:      log,
		store:    st,
		ops:      opstate.New(st, log),
		images:   imagemgr.New(st, cfg.StateDir, agentBinary),
		shutdown: make(chan struct{}),
	}
	if _, err := d.ops.Recover(ctx); err != nil {
		return err
	}
	if err := wireImages(d.images, cfg, log); err != nil {
		return err
	}
	sweepImageLeftovers(ctx, d.images, log)
	d.vms = newVMManager(cfg, st, d.images, log)
	if err := d.vms.Reconcile(ctx); err != nil {
		log.Error("reconcile VMs", "error", err)
		return fmt.Errorf("reconcile VMs with the store: %w", err)
	}
	defer d.vms.Shutdown()
	// Helper VMs a killed bangerd left go; stale warm snapshots are remade.
	d.vms.warm.Start(ctx)

	ln, err := listen(socket)
	if err != nil {
		log.Error("listen", "socket", socket, "error", err)
		return err
	}
	defer os.Remove(socket)

	srv := d.server(ctx, socket, logPath)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	log.Info("bangerd ready", "version", buildinfo.Version, "pid", d.info.PID, "socket", socket, "state_dir", cfg.StateDir, "config", o.ConfigPath)
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("systemd readiness notification failed", "error", err)
	}
	if o.OnReady != nil {
		o.OnReady(d.info)
	}

	err = d.wait(ctx, serveErr, storeLost)
	d.stopServing(srv)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// server is the API server; it also fills d.info.
func (d *Daemon) server(ctx context.Context, socket, logPath string) *http.Server {
	d.info = rpc.VersionInfo{
		Version:   buildinfo.Version,
		API:       buildinfo.APIVersion,
		PID:       os.Getpid(),
		StateDir:  d.opts.Config.StateDir,
		Socket:    socket,
		LogFile:   logPath,
		StartedAt: time.Now().UTC(),
	}
	return &http.Server{
		Handler:           rpc.RequireAPIVersion(d.guardStore(d.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// openBoundStore opens the store and ties it to the state dir. Nothing
// acts on the store before it is known to be this state dir's: an emptied
// or deleted store would take every VM directory for garbage.
func openBoundStore(ctx context.Context, cfg config.Config, adopt bool, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(ctx, StorePath(cfg))
	if err != nil {
		log.Error("open store", "error", err)
		return nil, err
	}
	bound, err := st.Bind(ctx, cfg.StateDir, adopt)
	if err != nil {
		st.Close()
		log.Error("the store does not belong to the state dir", "error", err)
		return nil, err
	}
	if bound.Note != "" {
		log.Warn("store and state dir tied together", "state_dir_id", bound.ID, "why", bound.Note)
	}
	return st, nil
}

// wait serves until ctx ends, a client asks the daemon to stop, serving
// fails or the store file changes, and returns the error to end with.
func (d *Daemon) wait(ctx context.Context, serveErr, storeLost <-chan error) error {
	var reason string
	var err error
	select {
	case <-ctx.Done():
		reason = "signal"
	case <-d.shutdown:
		reason = "client request"
	case err = <-serveErr:
		reason = "serve error"
		d.log.Error("serving the API failed", "error", err)
	case err = <-storeLost:
		reason = "store file changed"
		err = fmt.Errorf("%w: bangerd stopped rather than go on with a store nobody will read again; running VMs keep running. Put the store back (a backup: %s.bak-v*) and start bangerd again; it refuses a store that does not belong to the state dir", err, StorePath(d.opts.Config))
		d.log.Error("the store file changed under the daemon: stopping", "error", err)
	}
	d.log.Info("bangerd shutting down", "reason", reason)
	return err
}

// stopServing stops the operations, then the API server, each bounded.
func (d *Daemon) stopServing(srv *http.Server) {
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	opsCtx, cancel := context.WithTimeout(context.Background(), opsShutdownTimeout)
	if e := d.ops.Shutdown(opsCtx); e != nil {
		d.log.Error("operations did not stop in time", "error", e)
	}
	cancel()
	httpCtx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	if e := srv.Shutdown(httpCtx); e != nil {
		_ = srv.Close()
	}
	cancel()
	d.log.Info("bangerd stopped")
}

// watchStore checks every storeCheckInterval that banger.db is still the
// file the daemon opened, and sends the first difference on lost.
func watchStore(ctx context.Context, st *store.Store, lost chan<- error) {
	t := time.NewTicker(storeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := st.CheckFile(); errors.Is(err, store.ErrFileChanged) {
			lost <- err
			return
		}
	}
}

// guardStore refuses every request that may change something (any method
// but GET and HEAD) once the store file is no longer the one the daemon
// opened, so nothing is deleted on the word of a store that is gone.
func (d *Daemon) guardStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.URL.Path != "/v1/daemon/shutdown" {
			if err := d.store.CheckFile(); errors.Is(err, store.ErrFileChanged) {
				rpc.WriteError(w, rpc.Errorf(rpc.CodeUnavailable, "%v: bangerd refuses changes and is stopping; see `banger daemon logs`", err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// agentBinary finds banger-vsock-agent, which guest images carry and which
// serves as /init in the initramfs of imported kernels: $BANGER_AGENT_BIN,
// then beside the bangerd executable, then on PATH.
func agentBinary() (string, error) {
	if p := os.Getenv("BANGER_AGENT_BIN"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "banger-vsock-agent")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("banger-vsock-agent")
	if err != nil {
		return "", errors.New("banger-vsock-agent is neither beside bangerd nor on PATH: install it (make install) or set BANGER_AGENT_BIN")
	}
	return p, nil
}

func newLogger(file io.Writer, o Options, level string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	hopts := &slog.HandlerOptions{Level: lv}
	handlers := []slog.Handler{slog.NewJSONHandler(file, hopts)}
	if !o.Background {
		stderr := o.Stderr
		if stderr == nil {
			stderr = os.Stderr
		}
		handlers = append(handlers, slog.NewTextHandler(stderr, hopts))
	}
	return slog.New(slog.NewMultiHandler(handlers...))
}

// listen opens the API socket with mode 0600. A socket file left by a dead
// daemon is removed; one that still answers belongs to a live daemon of
// another state dir and is refused.
// privateDir makes dir (0700) or checks the one that is there: it must be a
// directory of bangerd's own user, and is narrowed to 0700 when others
// could reach into it (the socket is reachable, before its chmod, by
// whoever can reach its directory).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("socket dir %s is not a directory (it is %s): remove it, or give bangerd another runtime_dir", dir, fi.Mode().Type())
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("socket dir %s belongs to uid %d, not to bangerd's uid %d: remove it, or give bangerd another runtime_dir", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("narrow socket dir %s (mode %o) to 0700: %w", dir, fi.Mode().Perm(), err)
		}
	}
	return nil
}

func listen(socket string) (net.Listener, error) {
	if err := privateDir(filepath.Dir(socket)); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(socket); err == nil {
		c, derr := net.DialTimeout("unix", socket, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is in use by another bangerd: stop it, or give this one another runtime_dir or --socket", socket)
		}
		if err := os.Remove(socket); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", socket, err)
		}
	}
	// The socket's directory is 0700, so nobody else can reach the socket
	// in the moment before its own mode is narrowed.
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict socket %s: %w", socket, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}
