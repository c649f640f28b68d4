package vmm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
)

// Snapshotter is implemented by a Machine whose VMM can save a running
// guest. The daemon calls Pause, freezes the disks (they do not change
// while the guest is paused), calls SaveState, then Resume (or stops the
// VM).
type Snapshotter interface {
	// Pause stops the guest's vCPUs; its memory and disks stay as they are
	// until Resume.
	Pause(ctx context.Context) error
	// Resume runs a paused guest again.
	Resume(ctx context.Context) error
	// SaveState writes the paused guest's memory and device state into
	// dir (an existing directory, empty) and says what it wrote: VMM,
	// VMMVersion, Emulated, Files and Bytes. The caller adds the guest's
	// shape with WithShape (a machine adopted after a daemon restart does
	// not know its Spec). The guest stays paused. On error the files it
	// began are removed.
	SaveState(ctx context.Context, dir string) (State, error)
}

// Versioner is implemented by a Driver that can say which version of its
// VMM would run a VM now: a saved State is tied to it.
type Versioner interface {
	VMMVersion(ctx context.Context) (string, error)
}

// SaveChecker is implemented by a Driver whose VMs cannot always be saved:
// CanSave says, without starting anything, whether a VM it starts now
// could be (an error wrapping ErrNoSnapshots when not).
type SaveChecker interface {
	CanSave() error
}

// Network kinds of a State.
const (
	NetTap  = "tap"  // Spec.Net.Tap set
	NetUser = "user" // the VMM's own network, or none (Firecracker)
)

// NetKind is the kind of network spec has.
func NetKind(spec Spec) string {
	if spec.Net.Tap != "" {
		return NetTap
	}
	return NetUser
}

// State describes a saved guest: what it can be restored into. Files are
// relative to the directory SaveState wrote them in.
type State struct {
	VMM        string   `json:"vmm"`         // the driver's name
	VMMVersion string   `json:"vmm_version"` // e.g. "7.2.22", "1.14.2"
	MemoryMiB  int      `json:"memory_mib"`
	VCPUs      int      `json:"vcpus"`
	Drives     int      `json:"drives"`   // how many disks the guest has
	Network    string   `json:"network"`  // NetTap or NetUser
	Emulated   bool     `json:"emulated"` // saved under software emulation (TCG)
	Files      []string `json:"files"`
	// Bytes is the size of Files on disk.
	Bytes int64 `json:"bytes"`
}

// Restore asks a Driver's Start to resume a saved guest instead of
// booting: the VMM loads State from the files in Dir and the guest goes on
// running where it was saved. Kernel, drives and network still come from
// the Spec and must be those of the saved guest (the drives a frozen copy
// of its disks); CheckRestore says whether they fit.
type Restore struct {
	Dir   string
	State State
}

// ErrMismatch is wrapped by every error of CheckRestore.
var ErrMismatch = errors.New("snapshot does not fit")

// MismatchError says which property of a saved State differs from what a
// restore would run it with.
type MismatchError struct {
	Field string // "vmm", "vmm version", "memory", ...
	Saved string // the State's value
	Want  string // the restore's value
	Hint  string // what the user can do
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("cannot restore the snapshot: its %s is %s but this VM would have %s; %s", e.Field, e.Saved, e.Want, e.Hint)
}

// Unwrap makes errors.Is(err, ErrMismatch) hold.
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// CheckRestore says why st cannot be restored into spec by the driver
// called vmmName whose VMM is version (nil when it can). It checks what a
// VMM needs to load a state: the same VMM and version, memory size, vCPUs,
// number of disks, kind of network, and KVM for a state saved under KVM.
// The kernel and image are the caller's to check (it knows their
// identities; a Spec has only paths).
func CheckRestore(st State, spec Spec, vmmName, version string) error {
	mismatch := func(field, saved, want, hint string) error {
		return &MismatchError{Field: field, Saved: saved, Want: want, Hint: hint}
	}
	itoa := func(n int) string { return fmt.Sprint(n) }
	switch {
	case st.VMM != vmmName:
		return mismatch("vmm", quoted(st.VMM), quoted(vmmName), "restore it with vmm = "+quoted(st.VMM)+", or take a new snapshot")
	case version == "":
		return mismatch("vmm version", st.VMMVersion, "an unknown version", "check that "+st.VMM+" runs here (banger doctor)")
	case st.VMMVersion != version:
		return mismatch("vmm version", st.VMMVersion, version, "a VMM loads only the states of its own version: take a new snapshot with this "+st.VMM)
	case st.MemoryMiB != spec.MemoryMiB:
		return mismatch("memory size", itoa(st.MemoryMiB)+" MiB", itoa(spec.MemoryMiB)+" MiB", "restore it with its memory size")
	case st.VCPUs != spec.VCPUs:
		return mismatch("vCPU count", itoa(st.VCPUs), itoa(spec.VCPUs), "restore it with its vCPU count")
	case st.Drives != len(spec.Drives):
		return mismatch("disk count", itoa(st.Drives), itoa(len(spec.Drives)), "restore it with the disks it was saved with")
	case st.Network != NetKind(spec):
		return mismatch("network", st.Network, NetKind(spec), "restore it on the same kind of network (bridge or user mode)")
	case !st.Emulated && spec.Emulate:
		return mismatch("accelerator", "KVM", "software emulation (no usable KVM here)", "restore it on a host with KVM, or take a new snapshot here")
	case len(st.Files) == 0:
		return mismatch("files", "none", "a memory and device state", "the snapshot is incomplete: take a new one")
	}
	return nil
}

func quoted(s string) string { return fmt.Sprintf("%q", s) }

// WithShape is st with the shape of spec's guest: memory, vCPUs, disks
// and network.
func (st State) WithShape(spec Spec) State {
	st.MemoryMiB, st.VCPUs = spec.MemoryMiB, spec.VCPUs
	st.Drives, st.Network = len(spec.Drives), NetKind(spec)
	return st
}

// ErrNoSnapshots is wrapped by a driver's Start given a Restore it cannot
// honour, and by drivers whose machines are no Snapshotter.
var ErrNoSnapshots = errors.New("this VMM cannot save or restore a running guest")

// FilesSize is the size on disk of files under dir (allocated blocks, so
// a sparse memory file counts what it holds).
func FilesSize(dir string, files []string) (int64, error) {
	var n int64
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, f), &st); err != nil {
			return 0, fmt.Errorf("size of the saved state: %w", err)
		}
		n += st.Blocks * 512
	}
	return n, nil
}
