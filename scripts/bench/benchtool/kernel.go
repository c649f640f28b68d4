package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"banger/internal/kernelprep"
	"banger/internal/testutil/debkernel"
)

// benchKernel measures the peak resident memory (VmHWM) of
// kernelprep.Prepare, the work `banger kernel import` does inside bangerd,
// on Debian's kernel package. Each run is a fresh child process, so VmHWM
// is that run's own peak.
func benchKernel(ctx context.Context, dir string, runs int) error {
	deb := os.Getenv("BANGER_BENCH_KERNEL_DEB")
	if deb == "" {
		p, skip := debkernel.Deb()
		if skip != "" {
			note("Kernel import: skipped: %s (or set BANGER_BENCH_KERNEL_DEB to a linux-image .deb).", skip)
			return nil
		}
		deb = p
	}
	var init string
	if err := buildStaticInit(ctx, dir, &init); err != nil {
		return err
	}
	hwm := &series{name: "kernelprep.Prepare (.deb → vmlinux, initramfs, modules)"}
	var rss []int64
	for i := range runs {
		progress("kernel: run %d/%d", i+1, runs)
		out := filepath.Join(dir, fmt.Sprintf("k%d", i))
		cmd := exec.CommandContext(ctx, os.Args[0], "kernel-child", deb, out, init)
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("kernel-child: %w", err)
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return fmt.Errorf("kernel-child printed %q", b)
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		ns, _ := strconv.ParseInt(f[1], 10, 64)
		rss = append(rss, kb)
		hwm.add(time.Duration(ns))
		os.RemoveAll(out)
	}
	note("Kernel import: %s, %d runs, each in a fresh process; peak RSS is VmHWM from /proc/self/status after Prepare returned.", filepath.Base(deb), runs)
	printTable("kernelprep.Prepare time", 0, "", hwm)
	s := &series{name: "peak RSS (VmHWM), MiB"}
	for _, kb := range rss {
		s.add(time.Duration(kb)) // reuse the median helpers on KiB
	}
	fmt.Printf("\n| peak RSS | median | min | max |\n|---|---:|---:|---:|\n| VmHWM | %.0f MiB | %.0f MiB | %.0f MiB |\n",
		float64(s.median())/1024, float64(s.min())/1024, float64(s.max())/1024)
	return nil
}

// kernelChild runs Prepare once and prints VmHWM (KiB) and the duration (ns).
func kernelChild(deb, out, init string) error {
	start := time.Now()
	if _, err := kernelprep.Prepare(context.Background(), deb, out, kernelprep.Options{Init: init}); err != nil {
		return err
	}
	d := time.Since(start)
	runtime.KeepAlive(d)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb := strings.Fields(v)[0]
			fmt.Println(kb, d.Nanoseconds())
			return nil
		}
	}
	return fmt.Errorf("no VmHWM in /proc/self/status")
}

// buildStaticInit builds a small static Go binary to stand in for the
// guest's /init (Prepare only checks that it is a static x86_64 ELF).
func buildStaticInit(ctx context.Context, dir string, init *string) error {
	src := filepath.Join(dir, "init.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		return err
	}
	*init = filepath.Join(dir, "init")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", *init, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build a static init: %v: %s", err, b)
	}
	return nil
}
