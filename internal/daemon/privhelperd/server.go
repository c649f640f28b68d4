package privhelperd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// writeResponse sends one answer; a caller that went away is not the
// helper's problem.
func writeResponse(w io.Writer, r privhelper.Response) { _ = json.NewEncoder(w).Encode(r) }

// denied and invalid are the protocol's refusals, short.
var denied, invalid = privhelper.Denied, privhelper.Invalid

// Executor does the privileged work. The helper asks it for the view of
// the calling user, and only with requests that passed the policy.
type Executor interface {
	For(uid uint32) privops.Ops
}

// Server serves the helper socket.
type Server struct {
	Policy  Policy
	Exec    Executor
	Version string
	Log     *slog.Logger
}

// Listen opens the helper socket: its dir 0755, the socket 0666 (every
// caller is checked by SO_PEERCRED, so the mode is not the guard). The
// socket is bound under a temporary name, given its mode and then renamed
// into place, so that a user who connects the moment it appears is never
// refused for lack of write permission.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, errors.New("another banger helper already listens on " + path)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o666); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &socketListener{UnixListener: ln, path: path, file: fi}, nil
}

// socketListener removes the socket file it was renamed to on its first
// Close, and only while that path is still its socket: a helper started
// after this one may have bound the same path by then.
type socketListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
	once sync.Once
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// Limits that keep one caller from wedging the helper for the others.
const (
	maxConns       = 64               // connections served at once, in all
	maxConnsPerUID = 8                // of them, from one uid
	readTimeout    = 5 * time.Second  // to send the whole request
	requestTimeout = 2 * time.Minute  // to do it; then the request is cancelled
	writeTimeout   = 10 * time.Second // to take the answer
)

// Serve answers connections until ctx ends. Each connection carries one
// request and its answer. A caller not in the allow list is answered at
// once, before anything is read; a caller over its share of connections
// is told to retry. Temporary accept errors (out of file descriptors) are
// waited out, not fatal.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	var mu sync.Mutex
	total, perUID := 0, map[uint32]int{}
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				log.Warn("helper cannot accept a connection; waiting", "error", err, "wait", backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		uc := c.(*net.UnixConn)
		uid, err := peerUID(uc)
		if err != nil {
			refuse(uc, denied("cannot identify the caller: %v", err))
			continue
		}
		if !s.Policy.AllowedUIDs[uid] {
			log.Warn("helper request refused", "uid", uid, "reason", "uid not allowed")
			refuse(uc, denied("uid %d is not allowed to use the banger helper: add the user to its allow list", uid))
			continue
		}
		mu.Lock()
		busy := total >= maxConns || perUID[uid] >= maxConnsPerUID
		if !busy {
			total++
			perUID[uid]++
		}
		mu.Unlock()
		if busy {
			log.Warn("helper request refused", "uid", uid, "reason", "too many connections")
			refuse(uc, &privhelper.Error{Code: privhelper.CodeFailed, Msg: "the banger helper is serving too many requests (of this user, or in all); retry"})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				total--
				if perUID[uid]--; perUID[uid] == 0 {
					delete(perUID, uid)
				}
				mu.Unlock()
			}()
			defer uc.Close()
			s.handle(ctx, uc, uid, log)
		}()
	}
}

// refuse answers a connection without reading its request, and closes it.
func refuse(c *net.UnixConn, e *privhelper.Error) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	writeResponse(c, privhelper.ErrorResponse(e))
	c.Close()
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn, uid uint32, log *slog.Logger) {
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	data, err := io.ReadAll(io.LimitReader(c, privhelper.MaxRequest+1))
	_ = c.SetWriteDeadline(time.Now().Add(requestTimeout + writeTimeout))
	if err != nil {
		writeResponse(c, privhelper.ErrorResponse(invalid("read request: %v", err)))
		return
	}
	req, err := privhelper.DecodeRequest(data)
	if err != nil {
		writeResponse(c, privhelper.ErrorResponse(err))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.dispatch(rctx, uid, req)
	if err != nil {
		log.Warn("helper request refused or failed", "uid", uid, "op", req.Op, "error", err)
		writeResponse(c, privhelper.ErrorResponse(err))
		return
	}
	log.Info("helper request done", "uid", uid, "op", req.Op)
	resp.OK = true
	writeResponse(c, resp)
}
