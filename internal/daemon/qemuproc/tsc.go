package qemuproc

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	tscOnce sync.Once
	tscKHz  int
	tscFrom string
)

// hostTSCkHz returns the host's TSC frequency in kHz and where the number
// came from, or 0 when it is unknown. See the package documentation.
func hostTSCkHz() (int, string) {
	tscOnce.Do(func() {
		flags, mhz := readCPUInfo("/proc/cpuinfo")
		if flags["constant_tsc"] {
			if khz, ok := measureTSCkHz(); ok {
				tscKHz, tscFrom = khz, "measured RDTSC against CLOCK_MONOTONIC_RAW"
				return
			}
		}
		if mhz > 0 {
			tscKHz, tscFrom = int(math.Round(mhz*1000)), "/proc/cpuinfo cpu MHz"
		}
	})
	return tscKHz, tscFrom
}

// readCPUInfo returns the flags and "cpu MHz" of the first processor in a
// /proc/cpuinfo file.
func readCPUInfo(path string) (map[string]bool, float64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	return parseCPUInfo(bufio.NewScanner(f))
}

func parseCPUInfo(sc *bufio.Scanner) (map[string]bool, float64) {
	flags := map[string]bool{}
	var mhz float64
	seenFlags, seenMHz := false, false
	for sc.Scan() && !(seenFlags && seenMHz) {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "flags":
			if !seenFlags {
				for _, f := range strings.Fields(v) {
					flags[f] = true
				}
				seenFlags = true
			}
		case "cpu MHz":
			if !seenMHz {
				if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && x > 0 && x < 1e6 {
					mhz = x
				}
				seenMHz = true
			}
		}
	}
	return flags, mhz
}
