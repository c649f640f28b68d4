package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/qemuproc"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
)

// VMM kinds.
const (
	vmmFirecracker = "firecracker"
	vmmQEMU        = "qemu"
)

// machine is a running VMM process, whichever VMM it is.
type machine interface {
	pid() int
	startTime() uint64
	done() <-chan struct{}
	stop(ctx context.Context, graceful func(context.Context) error) error
}

type qemuMachine struct{ p *qemuproc.Process }

func (m qemuMachine) pid() int              { return m.p.PID }
func (m qemuMachine) startTime() uint64     { return m.p.StartTime }
func (m qemuMachine) done() <-chan struct{} { return m.p.Done() }
func (m qemuMachine) stop(ctx context.Context, g func(context.Context) error) error {
	return m.p.Stop(ctx, g)
}

type fcMachine struct{ p *fcproc.Process }

func (m fcMachine) pid() int              { return m.p.PID }
func (m fcMachine) startTime() uint64     { return m.p.StartTime }
func (m fcMachine) done() <-chan struct{} { return m.p.Done() }
func (m fcMachine) stop(ctx context.Context, g func(context.Context) error) error {
	return m.p.Stop(ctx, g)
}

// chooseVMM resolves "auto" to a VMM and says why.
func chooseVMM(want, firecrackerBin string) (kind, reason string, err error) {
	fc, fcErr := firecrackerPath(firecrackerBin)
	kvmErr := kvmUsable()
	switch want {
	case vmmFirecracker:
		if fcErr != nil {
			return "", "", fmt.Errorf("vmm is firecracker but %v", fcErr)
		}
		if kvmErr != nil {
			return "", "", fmt.Errorf("vmm is firecracker but %v; use vmm = \"qemu\" or --vmm qemu", kvmErr)
		}
		return vmmFirecracker, "asked for; " + fc + " with /dev/kvm", nil
	case vmmQEMU:
		return vmmQEMU, "asked for", nil
	case "", "auto":
		switch {
		case fcErr == nil && kvmErr == nil:
			return vmmFirecracker, "auto: " + fc + " is installed and /dev/kvm is usable", nil
		case fcErr != nil:
			return vmmQEMU, "auto: " + fcErr.Error(), nil
		default:
			return vmmQEMU, "auto: " + kvmErr.Error() + " (QEMU runs without it, slower)", nil
		}
	}
	return "", "", fmt.Errorf("unknown vmm %q: use auto, firecracker or qemu", want)
}

func firecrackerPath(bin string) (string, error) {
	if bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
			return "", fmt.Errorf("firecracker_bin %s is not a file", bin)
		}
		return bin, nil
	}
	p, err := exec.LookPath("firecracker")
	if err != nil {
		return "", errors.New("firecracker is not on PATH")
	}
	return p, nil
}

func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("/dev/kvm does not exist")
		}
		return fmt.Errorf("/dev/kvm is not usable by this user (%v)", err)
	}
	f.Close()
	return nil
}

// agentLink reaches one VM's guest agent: through Firecracker's hybrid
// vsock (a connection per stream), or through one multiplexed connection to
// QEMU's virtio-serial chardev, redialled when it breaks.
type agentLink struct {
	vmm    string
	socket string

	mu  sync.Mutex
	mux *client.Mux
}

func (l *agentLink) open(ctx context.Context) (net.Conn, error) {
	if l.vmm == vmmFirecracker {
		return client.DialFirecracker(ctx, l.socket, proto.DefaultPort)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mux != nil {
		select {
		case <-l.mux.Done():
			l.mux.Close()
			l.mux = nil
		default:
		}
	}
	if l.mux == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", l.socket)
		if err != nil {
			return nil, fmt.Errorf("reach the guest agent on %s: %w", l.socket, err)
		}
		m, err := client.NewMux(c)
		if err != nil {
			c.Close()
			return nil, err
		}
		l.mux = m
	}
	conn, err := l.mux.Open(ctx)
	if err != nil {
		l.mux.Close()
		l.mux = nil
	}
	return conn, err
}

func (l *agentLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mux != nil {
		l.mux.Close()
		l.mux = nil
	}
}

func (l *agentLink) client() *client.Client { return client.New(l.open, client.Config{}) }
