package fcproc

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a fake Firecracker: with FCPROC_FAKE=1 it
// serves a recording API on --api-sock instead of running tests. Knobs:
//
//	FCPROC_FAKE_MODE=exit       print to stderr and exit 3 before listening
//	FCPROC_FAKE_MODE=noapi      never listen, wait to be killed
//	FCPROC_FAKE_FAIL="PUT /x"   answer that call 400 with FCPROC_FAKE_FAULT
//	FCPROC_FAKE_IGNORE_CAD=1    do not exit on SendCtrlAltDel
//
// It writes its PID to fake.pid and every call as a JSON line to calls.jsonl,
// both beside the API socket. Like the real one, it refuses PUT /vsock when
// uds_path exists and never removes its sockets.
func TestMain(m *testing.M) {
	if os.Getenv("FCPROC_FAKE") == "1" {
		os.Exit(runFakeFirecracker(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type fakeCall struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
}

func runFakeFirecracker(args []string) int {
	var sock, id string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--api-sock":
			sock = args[i+1]
		case "--id":
			id = args[i+1]
		}
	}
	if sock == "" || id == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: need --api-sock and --id")
		return 2
	}
	dir := filepath.Dir(sock)
	if err := os.WriteFile(filepath.Join(dir, "fake.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	switch os.Getenv("FCPROC_FAKE_MODE") {
	case "exit":
		fmt.Fprintln(os.Stderr, "fake firecracker: boom, exiting early")
		return 3
	case "noapi":
		select {}
	}
	fail := os.Getenv("FCPROC_FAKE_FAIL")
	fault := os.Getenv("FCPROC_FAKE_FAULT")
	if fault == "" {
		fault = "injected failure"
	}
	ignoreCAD := os.Getenv("FCPROC_FAKE_IGNORE_CAD") == "1"

	calls, err := os.OpenFile(filepath.Join(dir, "calls.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	var mu sync.Mutex
	var held []net.Listener // vsock listeners, kept open until exit
	exit := make(chan int, 1)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		c := fakeCall{Method: r.Method, Path: r.URL.Path}
		if len(body) > 0 {
			c.Body = json.RawMessage(body)
		}
		line, _ := json.Marshal(c)
		calls.Write(append(line, '\n'))

		faultf := func(msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
		}
		if fail == r.Method+" "+r.URL.Path {
			faultf(fault)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/":
			json.NewEncoder(w).Encode(InstanceInfo{ID: id, State: "Not started", VMMVersion: "1.14.2", AppName: "Firecracker"})
			return
		case r.Method == http.MethodGet && r.URL.Path == "/version":
			json.NewEncoder(w).Encode(FirecrackerVersion{FirecrackerVersion: "1.14.2"})
			return
		case r.Method == http.MethodPut && r.URL.Path == "/vsock":
			var v Vsock
			if err := json.Unmarshal(body, &v); err != nil {
				faultf(err.Error())
				return
			}
			ln, err := net.Listen("unix", v.UDSPath)
			if err != nil {
				faultf("Vsock error: Address in use: " + err.Error())
				return
			}
			held = append(held, ln)
		case r.Method == http.MethodPut && r.URL.Path == "/actions":
			var a InstanceActionInfo
			json.Unmarshal(body, &a)
			if a.ActionType == ActionSendCtrlAltDel && !ignoreCAD {
				defer func() { exit <- 0 }()
			}
		case r.Method != http.MethodPut:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	// Like Firecracker, leave the socket file behind on exit.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	code := <-exit
	time.Sleep(10 * time.Millisecond) // let the answer reach the client
	for _, l := range held {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
	}
	return code
}

// fakeBinary writes a script that runs this test binary as a fake
// Firecracker with the given knobs and returns its path.
func fakeBinary(t *testing.T, env map[string]string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\nexport FCPROC_FAKE=1\n")
	for k, v := range env {
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	fmt.Fprintf(&b, "exec '%s' \"$@\"\n", exe)
	p := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(p, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// readCalls returns the calls the fake recorded in dir.
func readCalls(t *testing.T, dir string) []fakeCall {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "calls.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []fakeCall
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var c fakeCall
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("calls.jsonl line %q: %v", line, err)
		}
		out = append(out, c)
	}
	return out
}

// fakePID returns the PID the fake wrote, or 0 if it never ran.
func fakePID(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "fake.pid"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
