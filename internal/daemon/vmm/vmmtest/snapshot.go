package vmmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/atomicfile"
	"banger/internal/daemon/vmm"
)

// DefaultVersion is the fake VMM's version unless Driver.Version is set.
const DefaultVersion = "fake-1"

// StateFile is the one file a fake SaveState writes.
const StateFile = "fake.state"

// Saved is what a fake SaveState writes and a restoring Start reads back:
// enough for a test to see that a clone resumed its parent's guest.
type Saved struct {
	VM    string `json:"vm"`    // the name of the VM that was saved
	Saves int    `json:"saves"` // how many states that machine had saved, this one included
}

var (
	_ vmm.Snapshotter = (*Machine)(nil)
	_ vmm.Versioner   = (*Driver)(nil)
)

// VMMVersion is Version, or DefaultVersion.
func (d *Driver) VMMVersion(context.Context) (string, error) {
	if d.VersionErr != nil {
		return "", d.VersionErr
	}
	if d.Version != "" {
		return d.Version, nil
	}
	return DefaultVersion, nil
}

// load reads the saved state spec asks to restore, refusing one that does
// not fit as a real driver does.
func (d *Driver) load(spec vmm.Spec) (*Saved, error) {
	r := spec.Restore
	v, err := d.VMMVersion(context.Background())
	if err != nil {
		return nil, err
	}
	if err := vmm.CheckRestore(r.State, spec, d.Name(), v); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(r.Dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("fake vmm: load the saved state: %w", err)
	}
	var s Saved
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("fake vmm: load the saved state: %w", err)
	}
	return &s, nil
}

// Restored is what Start resumed, or nil when it booted the machine.
func (m *Machine) Restored() *Saved { return m.restored }

// Paused says whether the machine is paused.
func (m *Machine) Paused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}

func (m *Machine) running() error {
	select {
	case <-m.done:
		return errors.New("fake vmm: the machine has exited")
	default:
		return nil
	}
}

// Pause pauses a running machine.
func (m *Machine) Pause(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.running(); err != nil {
		return err
	}
	m.paused = true
	return nil
}

// Resume runs a paused machine again; resuming a running one is no error,
// as with QEMU's cont.
func (m *Machine) Resume(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.running(); err != nil {
		return err
	}
	m.paused = false
	return nil
}

// SaveState writes StateFile into dir; the machine must be paused.
func (m *Machine) SaveState(ctx context.Context, dir string) (vmm.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st vmm.State
	if err := m.running(); err != nil {
		return st, err
	}
	if !m.paused {
		return st, errors.New("fake vmm: save the state: the machine is not paused; pause it first")
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if m.d.SaveErr != nil {
		return st, m.d.SaveErr
	}
	v, err := m.d.VMMVersion(ctx)
	if err != nil {
		return st, err
	}
	m.saves++
	b, _ := json.Marshal(Saved{VM: m.name, Saves: m.saves})
	if err := atomicfile.WriteFile(filepath.Join(dir, StateFile), b, atomicfile.Mode(0o600)); err != nil {
		return st, fmt.Errorf("fake vmm: save the state: %w", err)
	}
	st = vmm.State{VMM: m.d.Name(), VMMVersion: v, Emulated: m.emulated, Files: []string{StateFile}}
	st.Bytes, err = vmm.FilesSize(dir, st.Files)
	return st, err
}
