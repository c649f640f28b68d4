package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/daemon/fcproc"
)

// benchFC starts the real Firecracker with fcproc.Start and reports
// Process.ConfigDuration (spawn to the InstanceStart call) against the time
// the bare binary takes from spawn until its API answers GET /.
func benchFC(ctx context.Context, dir string, runs int) error {
	bin := os.Getenv("BANGER_TEST_FIRECRACKER")
	if bin == "" {
		note("Firecracker: skipped: BANGER_TEST_FIRECRACKER is not set; point it at a firecracker binary.")
		return nil
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("BANGER_TEST_FIRECRACKER: %w", err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	if err := writeStubKernel(kernel); err != nil {
		return err
	}
	disk := filepath.Join(dir, "root.ext4")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		return err
	}

	cfgDur := &series{name: "fcproc.Start: spawn → InstanceStart call (ConfigDuration)"}
	ready := &series{name: "bare firecracker: spawn → GET / answers"}
	steps := map[string]*series{}
	var order []string
	kvm := true
	for i := range runs {
		progress("fc: run %d/%d", i+1, runs)
		vmDir, err := os.MkdirTemp(dir, "vm")
		if err != nil {
			return err
		}
		p, err := fcproc.Start(ctx, fcproc.Config{
			Name: fmt.Sprintf("bgbench-%d", i), Binary: bin, Dir: vmDir,
			Kernel: kernel, BootArgs: "console=ttyS0 reboot=k panic=1", VCPUs: 1, MemoryMiB: 128,
			Drives:   []fcproc.DriveConfig{{ID: "root", Path: disk, Root: true, ReadOnly: true}},
			VsockCID: 3,
			Timeouts: fcproc.Timeouts{CtrlAltDel: 100 * time.Millisecond},
		})
		var trace []fcproc.StepTrace
		switch {
		case err == nil:
			cfgDur.add(p.ConfigDuration)
			trace = p.Steps
			if err := p.Stop(ctx, nil); err != nil {
				return fmt.Errorf("stop firecracker %d: %w", p.PID, err)
			}
		case errors.Is(err, fcproc.ErrKVM):
			// No KVM: every configuration call still ran; InstanceStart
			// answered with the KVM error.
			kvm = false
			var se *fcproc.StepError
			if errors.As(err, &se) {
				trace = se.Steps
			}
		default:
			return fmt.Errorf("fcproc.Start: %w", err)
		}
		for _, s := range trace {
			if steps[s.Name] == nil {
				steps[s.Name] = &series{name: s.Name}
				order = append(order, s.Name)
			}
			steps[s.Name].add(s.Duration)
		}

		d, err := apiReady(ctx, bin, filepath.Join(dir, "bare.sock"))
		if err != nil {
			return err
		}
		ready.add(d)
	}
	note("Firecracker: %s, stub ELF kernel, 1 vCPU, 128 MiB, one read-only drive, vsock, no network; %d runs each, interleaved. KVM usable: %v.",
		fcVersion(ctx, bin), runs, kvm)
	printTable("Firecracker configuration", 0, "", cfgDur, ready)
	var rows []*series
	for _, n := range order {
		rows = append(rows, steps[n])
	}
	printTable("fcproc.Start steps (instance-start is the InstanceStart call itself, after ConfigDuration)", 0, "", rows...)
	return nil
}

// apiReady spawns firecracker with only an API socket and returns the time
// until GET / on it answers 200, then kills it.
func apiReady(ctx context.Context, bin, sock string) (time.Duration, error) {
	os.Remove(sock)
	defer os.Remove(sock)
	cmd := exec.Command(bin, "--api-sock", sock, "--id", "bgbench-bare")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("spawn %s: %w", bin, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := start.Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if getRoot(sock) {
			return time.Since(start), nil
		}
		time.Sleep(100 * time.Microsecond)
	}
	return 0, fmt.Errorf("firecracker API at %s did not answer within 5s", sock)
}

func getRoot(sock string) bool {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/1.1 200")
}

func fcVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return filepath.Base(bin)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// writeStubKernel writes the smallest x86_64 ELF Firecracker loads: one
// PT_LOAD segment at 16 MiB holding "hlt; jmp back".
func writeStubKernel(path string) error {
	const loadAddr, off = 0x1000000, 0x1000
	code := []byte{0xf4, 0xeb, 0xfd}
	b := make([]byte, off+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // x86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], loadAddr) // entry
	le.PutUint64(b[32:], 64)       // program headers right after the header
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 1)
	ph := b[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], off)
	le.PutUint64(ph[16:], loadAddr)
	le.PutUint64(ph[24:], loadAddr)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000)
	copy(b[off:], code)
	return os.WriteFile(path, b, 0o644)
}
