package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/rogpeppe/go-internal/testscript"

	"banger/internal/testutil/ptypair"
)

// ptyrun OUTFILE CMD ARGS...: run CMD with stderr on a terminal, stdout to a
// pipe, and write both (terminal output after a line "--- tty") to OUTFILE.
func cmdPTYRun(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: ptyrun OUTFILE CMD ARGS...")
	}
	master, slave, err := ptypair.Open()
	if err != nil {
		ts.Fatalf("no pseudo-terminal here: %v", err)
	}
	defer master.Close()
	var env []string
	for _, kv := range []string{"PATH", "HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "BANGER_CONFIG", "TERM"} {
		env = append(env, kv+"="+ts.Getenv(kv))
	}
	bin, err := lookPath(ts.Getenv("PATH"), args[1])
	ts.Check(err)
	cmd := exec.Command(bin, args[2:]...)
	cmd.Env = append(env, "TERM=xterm")
	cmd.Dir = ts.Getenv("WORK")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var tty bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(&tty, master) }()
	runErr := cmd.Run()
	slave.Close() // the reader sees EOF (EIO) once every slave fd is closed
	wg.Wait()
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(stdout.String()+"--- tty\n"+tty.String()), 0o644))
	if neg && runErr == nil {
		ts.Fatalf("%s succeeded", args[1])
	}
	if !neg && runErr != nil {
		ts.Fatalf("%s: %v\n%s", args[1], runErr, tty.String())
	}
}

func lookPath(path, name string) (string, error) {
	for _, dir := range strings.Split(path, ":") {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on the script's PATH", name)
}
