package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privhelperd"
	"banger/internal/daemon/privops"
)

// privileged is bangerd's one door to root (privops.Ops): in-process when
// bangerd runs as root, else the client of `bangerd helper` on
// helper_socket. Nothing is opened until the first use. Its owner, the
// vmManager, closes it.
type privileged struct {
	root    bool
	socket  string
	lockDir string

	mu   sync.Mutex
	exec *privhelperd.SystemExecutor
	// ops is what get returns, kept from the first success: the executor's
	// view for this uid, or the client after the helper's hello. A request
	// that finds no helper drops it, so that the next get says hello again.
	ops privops.Ops
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
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ops != nil {
		return p.ops, nil
	}
	if p.root {
		if p.exec == nil {
			e, err := privhelperd.NewSystemExecutor(privhelperd.SystemConfig{LockDir: p.lockDir})
			if err != nil {
				return nil, err
			}
			p.exec = e
		}
		p.ops = p.exec.For(uint32(os.Getuid()))
		return p.ops, nil
	}
	c := privhelper.Client{Socket: p.socket}
	r, err := c.Hello(ctx)
	if err != nil {
		return nil, fmt.Errorf("bangerd runs as uid %d, so privileged work goes through the banger helper, which is not usable: %w", os.Getuid(), err)
	}
	p.helperState = r.StateDir
	c.Unreachable = p.forget
	p.ops = c
	return c, nil
}

// forget drops the helper's client: the next get says hello again.
func (p *privileged) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.root {
		p.ops = nil
	}
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
	switch {
	case hs == "":
		return nil, fmt.Errorf("the banger helper knows no state dir of uid %d, so it accepts no disk files: dm snapshots need ~/.local/state/banger to exist, belong to you, and be state_dir (it is %s)", os.Getuid(), stateDir)
	case hs != mine:
		return nil, fmt.Errorf("the banger helper accepts disk files only in %s, and state_dir is %s: dm snapshots need the default state dir", hs, stateDir)
	}
	return ops, nil
}

// close releases the executor of a root bangerd; a client holds nothing
// open between requests.
func (p *privileged) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exec != nil {
		_ = p.exec.Close()
		p.exec = nil
	}
	p.ops = nil
}
