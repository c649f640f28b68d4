package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/imagemgr"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/qemuproc"
	"banger/internal/daemon/vmm"
	"banger/internal/daemon/workspace"
	"banger/internal/keylock"
	"banger/internal/store"
)

// stopTimeout bounds a VM's stop, its guest's shutdown and its VMM's
// escalation together.
const stopTimeout = 30 * time.Second

// jailBaseName is the directory under the state dir that holds the
// chroots of jailed Firecrackers: on the disks' filesystem, so that the
// jail can hard-link them.
const jailBaseName = "jail"

// vmManager runs the VM lifecycle: create (create.go), start as steps
// with their undo (start.go), stop and remove (stop.go), and the
// reconciliation of what the store says with what runs after a restart
// (reconcile.go). It reaches the VMMs only through their vmm.Driver.
type vmManager struct {
	cfg    config.Config
	st     *store.Store
	images *imagemgr.Manager
	ws     *workspace.Manager
	log    *slog.Logger

	net  *network
	priv *privileged
	// drivers are the VMMs by name; host probes what they need to know of
	// this host (tests replace both).
	drivers vmm.Registry
	host    func() vmm.Host

	mu    sync.Mutex
	live  map[string]*liveVM // by VM id
	locks keylock.Map
	users vmmUsers
	// recording orders the check of published host ports against the
	// other VMs with recording a start, so that two starts at once do
	// not both see the port free.
	recording sync.Mutex

	// bg ends when the manager shuts down: the watchers of running VMs
	// (which keep their logs bounded) stop then.
	bg     context.Context
	bgStop context.CancelFunc

	// warm keeps the warm snapshots `vm run` resumes (warmpool.go); its
	// builds run under bg.
	warm *warmPool
}

// liveVM is a VM whose VMM this daemon runs or has adopted.
type liveVM struct {
	m vmm.Machine
}

func newVMManager(cfg config.Config, st *store.Store, images *imagemgr.Manager, log *slog.Logger) *vmManager {
	priv := newPrivileged(cfg.HelperSocket, cfg.StateDir)
	bg, bgStop := context.WithCancel(context.Background())
	vm := &vmManager{cfg: cfg, st: st, images: images, ws: workspace.New(cfg.StateDir), log: log, live: map[string]*liveVM{},
		priv: priv, bg: bg, bgStop: bgStop,
		net: &network{cfgMode: cfg.Network, hosts: cfg.HostsFile, st: st, log: log, priv: priv,
			bridge: netmgr.Config{Bridge: cfg.BridgeName, Subnet: cfg.BridgeSubnet, DNSPort: bridgeDNSPort()}}}
	vm.registerDrivers()
	vm.warm = newWarmPool(vm)
	return vm
}

// registerDrivers sets the VMM drivers banger ships, and the host probe,
// up from the manager's config.
func (vm *vmManager) registerDrivers() {
	cfg := vm.cfg
	vm.drivers = vmm.NewRegistry(
		fcproc.NewDriver(fcproc.DriverConfig{Binary: cfg.FirecrackerBin, JailerBin: cfg.JailerBin,
			JailBase: filepath.Join(cfg.StateDir, jailBaseName)}),
		qemuproc.NewDriver(cfg.QemuBin))
	vm.host = func() vmm.Host { return probeHost(cfg.FirecrackerBin, cfg.QemuBin) }
}

// vmInputError marks a bad request; nothing was changed.
type vmInputError struct{ error }

func (e vmInputError) Unwrap() error { return e.error }

func inputf(format string, args ...any) error { return vmInputError{fmt.Errorf(format, args...)} }

// runDir is where a VM's sockets and logs live while it runs: under the
// runtime dir, whose paths are short enough for Unix sockets.
func (vm *vmManager) runDir(id string) string { return filepath.Join(vm.cfg.RuntimeDir, "vms", id) }

func (vm *vmManager) knownHosts(id string) string {
	return vm.ws.Path(id, workspace.KnownHostsName)
}

// consoleLog is where a started VM's console log is, by its VMM; "" when
// it has none.
func (vm *vmManager) consoleLog(v store.VM) string {
	d, err := vm.drivers.Get(v.VMMKind)
	if err != nil || v.RunDir == "" {
		return ""
	}
	return d.ConsoleLog(v.RunDir)
}

func (vm *vmManager) isLive(id string) bool { return vm.getLive(id) != nil }

func (vm *vmManager) getLive(id string) *liveVM {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.live[id]
}

func (vm *vmManager) setLive(id string, l *liveVM) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.live[id] = l
}

func (vm *vmManager) dropLive(id string) {
	vm.mu.Lock()
	l := vm.live[id]
	delete(vm.live, id)
	vm.mu.Unlock()
	if l != nil {
		l.m.Agent().Close()
	}
}

// Agent returns the link to a running VM's guest agent.
func (vm *vmManager) Agent(ctx context.Context, name string) (vmm.AgentLink, store.VM, error) {
	v, err := vm.st.GetVM(ctx, name)
	if err != nil {
		return nil, store.VM{}, err
	}
	l := vm.getLive(v.ID)
	if l == nil || v.State != store.VMRunning {
		return nil, v, vmInputError{fmt.Errorf("VM %q is %s, not running: start it (banger vm start %s)", name, v.State, name)}
	}
	return l.m.Agent(), v, nil
}

// removeWait bounds how long shutdown waits for removed VMs' directories
// to be deleted; the rest is deleted at the next start.
const removeWait = 30 * time.Second

// Shutdown leaves running VMs running: they are re-adopted at the next
// start. It drops the agent connections and waits for the directories of
// removed VMs to be deleted.
func (vm *vmManager) Shutdown() {
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), removeWait)
		defer cancel()
		if err := vm.ws.Close(ctx); err != nil {
			vm.log.Warn("shutdown", "error", err)
		}
	}()
	defer vm.priv.close()
	defer vm.net.close()
	vm.bgStop()
	// A warm build in progress removes its helper VM and half snapshot
	// as it ends, which needs the manager whole.
	vm.warm.wait()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for _, l := range vm.live {
		l.m.Agent().Close()
	}
}
