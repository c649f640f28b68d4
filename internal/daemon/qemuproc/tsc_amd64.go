package qemuproc

import (
	"time"

	"golang.org/x/sys/unix"
)

// rdtsc returns the time-stamp counter (tsc_amd64.s).
func rdtsc() uint64

// tscSample reads the raw monotonic clock around one RDTSC and returns the
// pair with the smaller window of the tries, so a preemption in between does
// not skew it.
func tscSample() (ns int64, tsc uint64, ok bool) {
	best := int64(-1)
	for range 5 {
		var a, b unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &a) != nil {
			return 0, 0, false
		}
		c := rdtsc()
		if unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &b) != nil {
			return 0, 0, false
		}
		w := b.Nano() - a.Nano()
		if best < 0 || w < best {
			best, ns, tsc = w, (a.Nano()+b.Nano())/2, c
		}
	}
	return ns, tsc, true
}

// measureTSCkHz measures the TSC rate over about 20 ms.
func measureTSCkHz() (int, bool) {
	n0, c0, ok := tscSample()
	if !ok {
		return 0, false
	}
	time.Sleep(20 * time.Millisecond)
	n1, c1, ok := tscSample()
	if !ok || n1 <= n0 || c1 <= c0 {
		return 0, false
	}
	khz := float64(c1-c0) / float64(n1-n0) * 1e6
	if khz < 100e3 || khz > 20e6 { // outside 100 MHz - 20 GHz: not believable
		return 0, false
	}
	// Round to whole kHz.
	return int(khz + 0.5), true
}
