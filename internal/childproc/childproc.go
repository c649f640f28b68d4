package childproc

import (
	"bytes"
	"errors"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

var spawner struct {
	once sync.Once
	reqs chan func()
}

// onSpawner runs f on the spawning thread. The goroutine behind it belongs
// to the package and lives as long as the process: its thread must outlive
// every child it forked.
func onSpawner(f func()) {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: this thread stays for the process's life
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	done := make(chan any, 1)
	spawner.reqs <- func() {
		defer func() { done <- recover() }()
		f()
	}
	if v := <-done; v != nil {
		panic(v)
	}
}

// Prepare sets cmd up to be killed (SIGKILL) when the daemon dies, keeping
// whatever SysProcAttr it already has.
func Prepare(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// Start starts cmd like cmd.Start, with Pdeathsig SIGKILL, forked on the
// spawning thread.
func Start(cmd *exec.Cmd) error {
	Prepare(cmd)
	var err error
	onSpawner(func() { err = cmd.Start() })
	return err
}

// Run is cmd.Run through Start.
func Run(cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// Output is cmd.Output through Start: it returns standard output, and
// standard error in the *exec.ExitError when the command fails.
func Output(cmd *exec.Cmd) ([]byte, error) {
	if cmd.Stdout != nil {
		return nil, errors.New("childproc: Stdout already set")
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	var stderr *prefixBuffer
	if cmd.Stderr == nil {
		stderr = &prefixBuffer{max: 32 << 10}
		cmd.Stderr = stderr
	}
	err := Run(cmd)
	if ee, ok := err.(*exec.ExitError); ok && stderr != nil {
		ee.Stderr = stderr.b.Bytes()
	}
	return stdout.Bytes(), err
}

// CombinedOutput is cmd.CombinedOutput through Start.
func CombinedOutput(cmd *exec.Cmd) ([]byte, error) {
	if cmd.Stdout != nil || cmd.Stderr != nil {
		return nil, errors.New("childproc: Stdout or Stderr already set")
	}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := Run(cmd)
	return b.Bytes(), err
}

// prefixBuffer keeps the first max bytes written to it.
type prefixBuffer struct {
	b   bytes.Buffer
	max int
}

func (p *prefixBuffer) Write(b []byte) (int, error) {
	if room := p.max - p.b.Len(); room > 0 {
		p.b.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}
