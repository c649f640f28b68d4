package bangerenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is a process found by Processes.
type Proc struct {
	PID  int
	Argv []string
	Cwd  string
}

// String is the PID and command line, for test messages.
func (p Proc) String() string { return strconv.Itoa(p.PID) + " " + strings.Join(p.Argv, " ") }

// Processes lists the live processes (zombies left out), other than this
// one, whose command line names dir or whose working directory is under
// it: what a test environment's banger started there.
func Processes(dir string) []Proc {
	var out []Proc
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", ent.Name(), "cwd"))
		if !bytes.Contains(cmd, []byte(dir)) && !strings.HasPrefix(cwd, dir) {
			continue
		}
		if st, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat")); strings.Contains(string(st), ") Z ") {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		out = append(out, Proc{PID: pid, Argv: argv, Cwd: cwd})
	}
	return out
}
