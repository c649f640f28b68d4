package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// privileged is bangerd's one door to root (privops.Ops): in-process when
// bangerd runs as root, else the client of `bangerd helper` on
// helper_socket. Nothing is opened until the first use.
type privileged struct {
	root    bool
	socket  string
	lockDir string

	mu   sync.Mutex
	exec *privhelper.SystemExecutor
	// helperState is the state dir the helper accepts this user's files
	// in, from its last hello.
	helperState string
}

func newPrivileged(socket, lockDir string) *privileged {
	return &privileged{root: os.Geteuid() == 0, socket: socket, lockDir: lockDir}
}

// get returns the operations, or why there are none: for a user, the
// helper must answer with this build's protocol.
func (p *privileged) get(ctx context.Context) (privops.Ops, error) {
	if p.root {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.exec == nil {
			e, err := privhelper.NewSystemExecutor(privhelper.SystemConfig{LockDir: p.lockDir})
			if err != nil {
				return nil, err
			}
			p.exec = e
		}
		return p.exec.For(uint32(os.Getuid())), nil
	}
	c := privhelper.Client{Socket: p.socket}
	r, err := c.Hello(ctx)
	if err != nil {
		return nil, fmt.Errorf("bangerd runs as uid %d, so privileged work goes through the banger helper, which is not usable: %w", os.Getuid(), err)
	}
	p.mu.Lock()
	p.helperState = r.StateDir
	p.mu.Unlock()
	return c, nil
}

// disks returns the snapshot operations for VMs kept in stateDir, or why
// there are none: besides what get needs, a helper accepts only files in
// the state dir it knows for this user.
func (p *privileged) disks(ctx context.Context, stateDir string) (privops.Ops, error) {
	ops, err := p.get(ctx)
	if err != nil || p.root {
		return ops, err
	}
	p.mu.Lock()
	hs := p.helperState
	p.mu.Unlock()
	mine := stateDir
	if r, err := filepath.EvalSymlinks(stateDir); err == nil {
		mine = r
	}
	if hs == "" || hs != mine {
		return nil, fmt.Errorf("the banger helper accepts disk files only in %q, and state_dir is %s: dm snapshots need the default state dir", hs, stateDir)
	}
	return ops, nil
}

func (p *privileged) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exec != nil {
		_ = p.exec.Close()
		p.exec = nil
	}
}
