package fcproc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/daemon/vmm"
)

// BenchmarkRealSnapshot times the real Firecracker's side of a snapshot of
// a 512 MiB VM (the stub kernel, which touches almost none of it): save
// (pause, PUT /snapshot/create of a full snapshot, resume) and a clone's
// restore through the driver (link the drives, spawn, API up, PUT
// /snapshot/load with the File backend, resume), each until the call
// returns. What the guest then does (its agent's resumed request) is not
// here: no guest runs on a host without usable KVM.
func BenchmarkRealSnapshot(b *testing.B) {
	bin := os.Getenv("BANGER_TEST_FIRECRACKER")
	if bin == "" {
		b.Skip("BANGER_TEST_FIRECRACKER is not set; point it at a firecracker binary to run this benchmark")
	}
	ctx := context.Background()
	files := b.TempDir()
	disk := filepath.Join(files, "root.ext4")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		b.Fatal(err)
	}
	kernel := stubKernel(b, files)
	cfg := Config{Name: "bgbench-snap", Binary: bin, Dir: b.TempDir(), Kernel: kernel, BootArgs: "console=ttyS0",
		VCPUs: 1, MemoryMiB: 512, VsockCID: 3, Drives: []DriveConfig{{ID: "root", Path: disk, Root: true}}}
	p, err := Start(ctx, cfg)
	if errors.Is(err, ErrKVM) {
		b.Skipf("Firecracker cannot start a VM here: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop(doneCtx(), nil)
	save := func(dir string) string {
		if err := p.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		v, err := p.SaveState(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		return v
	}
	b.Run("save-512MiB", func(b *testing.B) {
		for b.Loop() {
			dir := b.TempDir()
			save(dir)
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
	})
	snap := b.TempDir()
	version := save(snap)
	d := NewDriver(DriverConfig{Binary: bin})
	b.Run("restore-512MiB", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			spec := vmm.Spec{Name: "bgbench-clone", RunDir: b.TempDir(), Kernel: kernel, VCPUs: 1, MemoryMiB: 512, Drives: []string{disk}}
			st := vmm.State{VMM: vmm.Firecracker, VMMVersion: version, Files: []string{StateFileName, MemoryFileName, PathsFileName}}
			spec.Restore = &vmm.Restore{Dir: snap, State: st.WithShape(spec)}
			b.StartTimer()
			m, _, err := d.Start(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			m.Stop(doneCtx(), nil)
			b.StartTimer()
		}
	})
}
