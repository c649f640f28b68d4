package fcproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procRoot is where the process table is read; tests never change it.
const procRoot = "/proc"

// procStat is what fcproc needs from /proc/PID/stat.
type procStat struct {
	State     byte   // field 3: R, S, D, Z, X, ...
	StartTime uint64 // field 22: clock ticks after boot
}

// parseProcStat reads fields 3 and 22 of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so the fields are counted from the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 || bytes.IndexByte(data, '(') < 0 || bytes.IndexByte(data, '(') > end {
		return procStat{}, errors.New("no command name in parentheses")
	}
	rest := strings.Fields(string(data[end+1:]))
	// rest[0] is field 3 (state), so field N is rest[N-3].
	const startField = 22
	if len(rest) < startField-2 {
		return procStat{}, fmt.Errorf("only %d fields after the command name, need %d", len(rest), startField-2)
	}
	if len(rest[0]) != 1 {
		return procStat{}, fmt.Errorf("state field %q is not one letter", rest[0])
	}
	st, err := strconv.ParseUint(rest[startField-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("start time field %q: %w", rest[startField-3], err)
	}
	return procStat{State: rest[0][0], StartTime: st}, nil
}

// readProcStat reads /proc/PID/stat. A missing process gives an error that
// satisfies errors.Is(err, os.ErrNotExist).
func readProcStat(pid int) (procStat, error) {
	p := fmt.Sprintf("%s/%d/stat", procRoot, pid)
	data, err := os.ReadFile(p)
	if err != nil {
		return procStat{}, err
	}
	st, err := parseProcStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("parse %s: %w", p, err)
	}
	return st, nil
}

// readCmdline returns the NUL-separated arguments of /proc/PID/cmdline.
func readCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("%s/%d/cmdline", procRoot, pid))
	if err != nil {
		return nil, err
	}
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// cmdlineHasAPISock reports whether args carry "--api-sock sock" (or
// "--api-sock=sock").
// IsCommandLineOf reports whether args (a /proc/PID/cmdline split at its
// NULs) is the argv of a Firecracker started in dir: it passes exactly
// dir's API socket to --api-sock. A command that merely names a file in
// dir is not.
func IsCommandLineOf(args []string, dir string) bool {
	return cmdlineHasAPISock(args, APISocketPath(strings.TrimRight(dir, "/")))
}

func cmdlineHasAPISock(args []string, sock string) bool {
	for i, a := range args {
		if a == "--api-sock" && i+1 < len(args) && args[i+1] == sock {
			return true
		}
		if a == "--api-sock="+sock {
			return true
		}
	}
	return false
}

// processAlive reports whether pid is still the process that started at
// startTime and has not exited (a zombie counts as exited).
func processAlive(pid int, startTime uint64) bool {
	st, err := readProcStat(pid)
	if err != nil {
		return false
	}
	if st.StartTime != startTime {
		return false
	}
	return st.State != 'Z' && st.State != 'X' && st.State != 'x'
}
