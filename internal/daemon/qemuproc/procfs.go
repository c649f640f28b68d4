package qemuproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// parseStartTime returns field 22 (starttime, clock ticks after boot) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %.60q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("only %d fields after the command name", len(f))
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time %q: %w", f[19], err)
	}
	return st, nil
}

// processStartTime reads the start time of pid from /proc.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	st, err := parseStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// processArgs reads the argv of pid from /proc.
func processArgs(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}

// describeArgs recovers the accelerator and the forwards from a QEMU argv
// this package built.
func describeArgs(args []string) (Accel, []Forward) {
	var accel Accel
	var fwds []Forward
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-accel":
			accel = Accel(strings.SplitN(args[i+1], ",", 2)[0])
		case "-netdev":
			for _, opt := range strings.Split(args[i+1], ",") {
				rule, ok := strings.CutPrefix(opt, "hostfwd=tcp:")
				if !ok {
					continue
				}
				// HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT
				host, guest, ok := strings.Cut(rule, "-")
				if !ok {
					continue
				}
				ha, hp, ok1 := strings.Cut(host, ":")
				_, gp, ok2 := strings.Cut(guest, ":")
				hport, err1 := strconv.Atoi(hp)
				gport, err2 := strconv.Atoi(gp)
				if ok1 && ok2 && err1 == nil && err2 == nil {
					fwds = append(fwds, Forward{HostAddr: ha, HostPort: hport, GuestPort: gport})
				}
			}
		}
	}
	return accel, fwds
}
