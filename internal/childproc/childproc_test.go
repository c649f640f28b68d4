package childproc_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/childproc"
)

// The test binary doubles as a parent process that a test can SIGKILL.
func TestMain(m *testing.M) {
	switch os.Getenv("CHILDPROC_TEST_PARENT") {
	case "":
		os.Exit(m.Run())
	case "childproc":
		parent(func(cmd *exec.Cmd) error { return childproc.Start(cmd) })
	case "plain":
		parent(func(cmd *exec.Cmd) error { return cmd.Start() })
	case "pdeathsig-on-a-dying-thread":
		parent(func(cmd *exec.Cmd) error {
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			errc := make(chan error)
			go func() {
				runtime.LockOSThread() // returns locked: Go ends this thread
				errc <- cmd.Start()
			}()
			return <-errc
		})
	}
}

// parent starts a long sleep with start, prints its pid, then makes Go end
// a few OS threads (goroutines that lock their thread and return), says
// whether the child is still alive, and waits to be killed.
func parent(start func(*exec.Cmd) error) {
	// Keep the main thread to this goroutine: Go never ends the main
	// thread, so goroutines that should end theirs must run elsewhere.
	runtime.LockOSThread()
	cmd := exec.Command("sleep", "300")
	if err := start(cmd); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("child", cmd.Process.Pid)
	for i := 0; i < 8; i++ {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
		}()
		<-done
	}
	time.Sleep(300 * time.Millisecond)
	fmt.Println("alive", alive(cmd.Process.Pid))
	go func() { _ = cmd.Wait() }()
	select {}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}

// runParent starts the test binary as a parent of the given mode and returns
// its child's pid and whether the child survived the thread exits.
func runParent(t *testing.T, mode string) (parent *exec.Cmd, child int, survived bool) {
	t.Helper()
	parent = exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), "CHILDPROC_TEST_PARENT="+mode)
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "child":
			child, _ = strconv.Atoi(f[1])
			t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
		case len(f) == 2 && f[0] == "alive":
			return parent, child, f[1] == "true"
		default:
			t.Fatalf("parent said %q", sc.Text())
		}
	}
	t.Fatalf("parent ended before reporting: %v", sc.Err())
	return nil, 0, false
}

func gone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestChildDiesWithItsParent(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("needs sleep on PATH")
	}
	parent, child, survived := runParent(t, "childproc")
	if !survived {
		t.Fatal("the child died while its parent lived on (it ended OS threads): it was forked on a thread that exited")
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	if !gone(child, 5*time.Second) {
		t.Fatalf("child %d still runs 5 s after its parent was SIGKILLed", child)
	}
}

// The two controls show the test can fail: without Pdeathsig the child
// outlives a SIGKILLed parent, and with Pdeathsig set on an ordinary
// thread the child dies when Go ends that thread, with the parent alive.
func TestControls(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("needs sleep on PATH")
	}
	t.Run("plain exec outlives its parent", func(t *testing.T) {
		parent, child, survived := runParent(t, "plain")
		if !survived {
			t.Fatal("plain child died early")
		}
		_ = parent.Process.Signal(syscall.SIGKILL)
		_ = parent.Wait()
		if gone(child, 500*time.Millisecond) {
			t.Fatal("a plain child died with its parent: this test could not tell Pdeathsig apart")
		}
	})
	t.Run("pdeathsig fires when the forking thread ends", func(t *testing.T) {
		_, _, survived := runParent(t, "pdeathsig-on-a-dying-thread")
		if survived {
			t.Fatal("the child outlived the thread that forked it; the kernel did not tie Pdeathsig to the thread")
		}
	})
}

func TestOutputAndCombinedOutput(t *testing.T) {
	out, err := childproc.Output(exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	if string(out) != "out\n" {
		t.Fatalf("stdout %q", out)
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 || string(ee.Stderr) != "err\n" {
		t.Fatalf("err = %#v", err)
	}
	out, err = childproc.CombinedOutput(exec.Command("sh", "-c", "echo out; echo err >&2"))
	if err != nil || string(out) != "out\nerr\n" {
		t.Fatalf("combined %q, %v", out, err)
	}
}
