package procwatch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procRoot is where the process table is read.
const procRoot = "/proc"

// Stat is what banger uses of /proc/PID/stat.
type Stat struct {
	PID       int    // field 1
	Comm      string // field 2, without its parentheses
	State     byte   // field 3: R, S, D, Z, X, ...
	PPID      int    // field 4
	StartTime uint64 // field 22: clock ticks after boot, tells a reused pid apart
}

// Exited reports whether the state is one of an exited process (a zombie,
// or dead).
func (s Stat) Exited() bool {
	return s.State == 'Z' || s.State == 'X' || s.State == 'x'
}

// statFields is how many fields ParseStat needs: up to field 22.
const statFields = 22

// ParseStat parses a /proc/PID/stat line. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so it runs from
// the first '(' to the last ')' and the other fields are counted after it.
func ParseStat(data []byte) (Stat, error) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return Stat{}, errors.New("no command name in parentheses")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data[:open])))
	if err != nil || pid <= 0 {
		return Stat{}, fmt.Errorf("pid field %q is not a process id", bytes.TrimSpace(data[:open]))
	}
	rest := strings.Fields(string(data[end+1:]))
	// rest[0] is field 3 (state), so field N is rest[N-3].
	if len(rest) < statFields-2 {
		return Stat{}, fmt.Errorf("only %d fields after the command name, need %d", len(rest), statFields-2)
	}
	if len(rest[0]) != 1 {
		return Stat{}, fmt.Errorf("state field %q is not one letter", rest[0])
	}
	ppid, err := strconv.Atoi(rest[4-3])
	if err != nil {
		return Stat{}, fmt.Errorf("parent pid field %q: %w", rest[4-3], err)
	}
	st, err := strconv.ParseUint(rest[statFields-3], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("start time field %q: %w", rest[statFields-3], err)
	}
	return Stat{
		PID:       pid,
		Comm:      string(data[open+1 : end]),
		State:     rest[0][0],
		PPID:      ppid,
		StartTime: st,
	}, nil
}

// ReadStat reads /proc/PID/stat. A process that does not exist gives an
// error that satisfies errors.Is(err, os.ErrNotExist).
func ReadStat(pid int) (Stat, error) {
	p := procPath(pid, "stat")
	data, err := os.ReadFile(p)
	if err != nil {
		return Stat{}, err
	}
	st, err := ParseStat(data)
	if err != nil {
		return Stat{}, fmt.Errorf("parse %s: %w", p, err)
	}
	return st, nil
}

// Alive reports whether pid is still the process that started at
// startTime and has not exited (a zombie counts as exited).
func Alive(pid int, startTime uint64) bool {
	st, err := ReadStat(pid)
	return err == nil && st.StartTime == startTime && !st.Exited()
}

// Running reports whether pid exists and has not exited, whatever process
// it is.
func Running(pid int) bool {
	st, err := ReadStat(pid)
	return err == nil && !st.Exited()
}

func procPath(pid int, name string) string {
	return procRoot + "/" + strconv.Itoa(pid) + "/" + name
}
