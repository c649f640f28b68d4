package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/daemon/fcproc"
)

// benchFC times Firecracker's configuration, spawn included, with
// fcproc.Start and with a raw client doing the same work: the same argv,
// console file and process group, the same calls with the same bodies, on
// one kept-alive connection. Both clocks start just before the fork and
// exec and stop just before the InstanceStart call. The variants rotate
// run by run (A B C D, B C D A, ...), so a machine that speeds up or slows
// down is shared by all.
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
	type variant struct {
		s   *series
		run func(i int) (time.Duration, error)
	}
	steps := map[string]*series{}
	var order []string
	banger := func(withLog bool) func(int) (time.Duration, error) {
		return func(i int) (time.Duration, error) {
			d, trace, err := fcStart(ctx, dir, bin, kernel, disk, i, withLog)
			if !withLog {
				for _, s := range trace {
					if steps[s.Name] == nil {
						steps[s.Name] = &series{name: s.Name}
						order = append(order, s.Name)
					}
					steps[s.Name].add(s.Duration)
				}
			}
			return d, err
		}
	}
	raw := func(withLog bool) func(int) (time.Duration, error) {
		return func(i int) (time.Duration, error) {
			return rawConfigure(ctx, dir, bin, kernel, disk, i, withLog)
		}
	}
	vs := []variant{
		{&series{name: "fcproc.Start: spawn → InstanceStart call"}, banger(false)},
		{&series{name: "raw client, same calls: spawn → InstanceStart call"}, raw(false)},
		{&series{name: "fcproc.Start + logger and metrics"}, banger(true)},
		{&series{name: "raw client + logger and metrics"}, raw(true)},
	}
	var ratios, ratiosLog []float64
	for i := range runs {
		progress("fc: run %d/%d", i+1, runs)
		got := make([]time.Duration, len(vs))
		for k := range vs {
			j := (i + k) % len(vs)
			d, err := vs[j].run(i*len(vs) + k)
			if err != nil {
				return err
			}
			vs[j].s.add(d)
			got[j] = d
		}
		ratios = append(ratios, got[0].Seconds()/got[1].Seconds())
		ratiosLog = append(ratiosLog, got[2].Seconds()/got[3].Seconds())
	}
	note("Firecracker: %s, stub ELF kernel, 1 vCPU, 128 MiB, one read-only drive, vsock, no network; %d runs of each variant, rotated run by run. Clocks start before the fork and exec, stop before the InstanceStart call.",
		fcVersion(ctx, bin), runs)
	printTable("Firecracker configuration, spawn included", 0, "raw client, same calls: spawn → InstanceStart call", vs[0].s, vs[1].s)
	printTable("The same with PUT /logger and PUT /metrics", 0, "raw client + logger and metrics", vs[2].s, vs[3].s)
	fmt.Printf("\nPaired ratios (banger / raw, same run): %s; with logger and metrics: %s\n", ratioSummary(ratios), ratioSummary(ratiosLog))
	var rows []*series
	for _, n := range order {
		rows = append(rows, steps[n])
	}
	printTable("fcproc.Start steps, default config (instance-start is the InstanceStart call itself, after ConfigDuration)", 0, "", rows...)
	return nil
}

// ratioSummary is "median X (min–max)" of paired ratios.
func ratioSummary(r []float64) string {
	s := slices.Clone(r)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("median %.2f× (%.2f–%.2f)", med, s[0], s[len(s)-1])
}

// fcStart runs fcproc.Start once and returns ConfigDuration and the steps.
// Without KVM InstanceStart fails after every configuration call ran; the
// trace still holds the timings.
func fcStart(ctx context.Context, dir, bin, kernel, disk string, i int, withLog bool) (time.Duration, []fcproc.StepTrace, error) {
	vmDir, err := os.MkdirTemp(dir, "vm")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(vmDir)
	p, err := fcproc.Start(ctx, fcproc.Config{
		Name: fmt.Sprintf("bgbench-%d", i), Binary: bin, Dir: vmDir,
		Kernel: kernel, BootArgs: "console=ttyS0 reboot=k panic=1", VCPUs: 1, MemoryMiB: 128,
		Drives:         []fcproc.DriveConfig{{ID: "root", Path: disk, Root: true, ReadOnly: true}},
		VsockCID:       3,
		Timeouts:       fcproc.Timeouts{CtrlAltDel: 100 * time.Millisecond},
		FirecrackerLog: withLog, Metrics: withLog,
	})
	switch {
	case err == nil:
		d, trace := p.ConfigDuration, p.Steps
		if err := p.Stop(ctx, nil); err != nil {
			return 0, nil, fmt.Errorf("stop firecracker %d: %w", p.PID, err)
		}
		return d, trace, nil
	case errors.Is(err, fcproc.ErrKVM):
		var se *fcproc.StepError
		if errors.As(err, &se) {
			return sinceSpawn(se.Steps), se.Steps, nil
		}
		return 0, nil, err
	default:
		return 0, nil, fmt.Errorf("fcproc.Start: %w", err)
	}
}

// sinceSpawn adds up the steps from spawn up to, not including,
// InstanceStart.
func sinceSpawn(steps []fcproc.StepTrace) time.Duration {
	var d time.Duration
	on := false
	for _, s := range steps {
		on = on || s.Name == fcproc.StepSpawn
		if s.Name == fcproc.StepInstanceStart {
			break
		}
		if on {
			d += s.Duration
		}
	}
	return d
}

// rawConfigure does what fcproc.Start does with the same config, by hand:
// spawn with the same argv, console file and process group, connect-retry
// every 50 µs, then the same PUTs with the same bodies on one connection.
// It returns the time from just before the spawn to just before the
// InstanceStart call, which it then makes, and kills the process.
func rawConfigure(ctx context.Context, dir, bin, kernel, disk string, i int, withLog bool) (time.Duration, error) {
	vmDir, err := os.MkdirTemp(dir, "raw")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(vmDir)
	sock, vsock := fcproc.APISocketPath(vmDir), fcproc.VsockPath(vmDir)
	show := true
	calls := []struct {
		path string
		body any
	}{
		{"/machine-config", fcproc.MachineConfig{VCPUCount: 1, MemSizeMiB: 128}},
		{"/boot-source", fcproc.BootSource{KernelImagePath: kernel, BootArgs: "console=ttyS0 reboot=k panic=1"}},
		{"/drives/root", fcproc.Drive{DriveID: "root", PathOnHost: disk, IsRootDevice: true, IsReadOnly: true, CacheType: "Writeback"}},
		{"/vsock", fcproc.Vsock{GuestCID: 3, UDSPath: vsock}},
	}
	if withLog {
		calls = append([]struct {
			path string
			body any
		}{
			{"/logger", fcproc.Logger{LogPath: fcproc.LogPath(vmDir), Level: "Info", ShowLevel: &show}},
			{"/metrics", fcproc.Metrics{MetricsPath: fcproc.MetricsPath(vmDir)}},
		}, calls...)
	}
	bodies := make([][]byte, len(calls))
	for k, c := range calls {
		if bodies[k], err = json.Marshal(c.body); err != nil {
			return 0, err
		}
	}
	console, err := os.OpenFile(fcproc.ConsoleLogPath(vmDir), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer console.Close()
	cmd := exec.Command(bin, "--api-sock", sock, "--id", fmt.Sprintf("bgbench-raw-%d", i))
	cmd.Dir, cmd.Stdout, cmd.Stderr = vmDir, console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("spawn %s: %w", bin, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var c net.Conn
	for deadline := start.Add(5 * time.Second); ; {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("firecracker API at %s did not answer within 5s: %v", sock, err)
		}
		time.Sleep(50 * time.Microsecond)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for k, call := range calls {
		if err := rawPut(c, br, call.path, bodies[k]); err != nil {
			return 0, err
		}
	}
	d := time.Since(start)
	// InstanceStart, as Start makes it; without KVM it fails, which is fine.
	_ = rawPut(c, br, "/actions", []byte(`{"action_type":"InstanceStart"}`))
	return d, nil
}

// rawPut sends one PUT and reads its answer, failing on a non-2xx status.
func rawPut(c net.Conn, br *bufio.Reader, path string, body []byte) error {
	req := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, len(body))
	if _, err := c.Write(append([]byte(req), body...)); err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	status, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	n := 0
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("PUT %s: %w", path, err)
		}
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(l), "content-length:"); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 2") {
		return fmt.Errorf("PUT %s: %s", path, strings.TrimSpace(status))
	}
	return nil
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
