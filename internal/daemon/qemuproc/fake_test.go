package qemuproc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake QEMU: with fakeEnv set it parses the
// -name marker and the -chardev socket options of the argv Start built,
// serves a small QMP monitor on the descriptor it was given, and behaves as
// the mode says:
//
//	obedient  quit makes it exit
//	stubborn  ignores SIGTERM, system_powerdown and quit: only SIGKILL ends it
//	fail      prints a QEMU-like error and exits 1 at once
//	portbusy  prints QEMU's host forwarding error and exits 1
//	silent    never opens its monitor
//
// Each launch appends a line to Dir/launches.
const fakeEnv = "BANGER_QEMUPROC_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeQEMU(mode string, args []string) int {
	var dir string
	fds := map[string]int{} // chardev id -> listening descriptor
	for i := 0; i+1 < len(args); i++ {
		switch {
		case args[i] == "-name":
			dir = strings.TrimSuffix(strings.TrimPrefix(args[i+1], "guest="), "/")
		case args[i] == "-chardev" && strings.HasPrefix(args[i+1], "socket,"):
			var id string
			fd := -1
			for _, o := range strings.Split(args[i+1], ",") {
				if v, ok := strings.CutPrefix(o, "id="); ok {
					id = v
				}
				if v, ok := strings.CutPrefix(o, "fd="); ok {
					fd, _ = strconv.Atoi(v)
				}
			}
			fds[id] = fd
		}
	}
	if dir == "" || fds["qmp"] < 3 {
		fmt.Fprintln(os.Stderr, "fake qemu: no -name marker or no qmp socket descriptor")
		return 2
	}
	// What a sandboxed QEMU would see of itself, for the tests to check.
	if f, err := os.OpenFile(filepath.Join(dir, "launches"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintln(f, os.Getpid())
		f.Close()
	}
	// Never outlive the test binary that started us.
	ppid := os.Getppid()
	go func() {
		for os.Getppid() == ppid {
			time.Sleep(100 * time.Millisecond)
		}
		os.Exit(3)
	}()
	fmt.Fprintln(os.Stderr, "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]")
	switch mode {
	case "fail":
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -drive id=vd0,file=/nonexistent: Could not open '/nonexistent': No such file or directory")
		return 1
	case "portbusy":
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -netdev user,id=n0,hostfwd=tcp:127.0.0.1:1-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:1-:22'")
		return 1
	case "silent":
		select {}
	case "stubborn":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	}
	if fd := fds["agent"]; fd >= 3 {
		defer os.NewFile(uintptr(fd), "agent").Close()
	}
	l, err := net.FileListener(os.NewFile(uintptr(fds["qmp"]), "qmp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 1
	}
	quit := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serveFakeQMP(c, mode == "obedient", quit)
		}
	}()
	<-quit
	return 0
}

// serveFakeQMP answers QMP on c like QEMU 7.2 does, with an event before
// some replies. quit is closed when "quit" arrives and obeyQuit is set.
func serveFakeQMP(c net.Conn, obeyQuit bool, quit chan struct{}) {
	defer c.Close()
	w := bufio.NewWriter(c)
	send := func(v any) {
		b, _ := json.Marshal(v)
		w.Write(append(b, '\r', '\n'))
		w.Flush()
	}
	send(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}}, "capabilities": []string{"oob"}}})
	sc := bufio.NewScanner(c)
	event := func(name string) {
		send(map[string]any{"timestamp": map[string]int{"seconds": 1, "microseconds": 2}, "event": name})
	}
	for sc.Scan() {
		var req struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &req) != nil {
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		reply := func(ret any) { send(map[string]any{"return": ret, "id": req.ID}) }
		switch req.Execute {
		case "qmp_capabilities":
			reply(map[string]any{})
		case "query-status":
			event("RTC_CHANGE")
			reply(map[string]any{"status": "running", "singlestep": false, "running": true})
		case "system_powerdown":
			event("POWERDOWN")
			reply(map[string]any{})
		case "quit":
			event("SHUTDOWN")
			reply(map[string]any{})
			if obeyQuit {
				close(quit)
				return
			}
		default:
			send(map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "The command " + req.Execute + " has not been found"}, "id": req.ID})
		}
	}
}
