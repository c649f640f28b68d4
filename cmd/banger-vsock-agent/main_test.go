package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/guest/agentcmd"
	"banger/internal/guest/boot"
	"banger/internal/guest/client"
	"banger/internal/testutil"

	"golang.org/x/crypto/ssh"
)

const testVersion = "v9.8.7-test"

// buildAgent builds the binary as the Makefile does: static, with the
// version stamped in.
func buildAgent(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
			goTool = p
		} else {
			t.Skip("the go tool is not on PATH")
		}
	}
	bin := filepath.Join(t.TempDir(), "banger-vsock-agent")
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags", "-X banger/internal/buildinfo.Version="+testVersion, "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// agentCmd runs the binary with only the test hooks and PATH set.
func agentCmd(bin string, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func TestBinary(t *testing.T) {
	bin := buildAgent(t)

	t.Run("version", func(t *testing.T) {
		for _, arg := range []string{"version", "--version"} {
			out, err := agentCmd(bin, nil, arg).Output()
			if err != nil {
				t.Fatalf("%s: %v", arg, err)
			}
			if want := "banger-vsock-agent " + testVersion + " (protocol 1)\n"; string(out) != want {
				t.Fatalf("%s printed %q, want %q", arg, out, want)
			}
		}
	})

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("the agent is dynamically linked; guests may lack its libc")
			}
		}
	})

	t.Run("bad usage", func(t *testing.T) {
		var stderr bytes.Buffer
		cmd := agentCmd(bin, nil, "frobnicate")
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "usage:") {
			t.Fatalf("unknown command: %v, stderr %q", err, stderr.String())
		}
	})

	t.Run("boot", func(t *testing.T) { testBoot(t, bin) })
	t.Run("serve", func(t *testing.T) { testServe(t, bin, "serve") })
	t.Run("run", func(t *testing.T) { testServe(t, bin, "run") })
	t.Run("init", func(t *testing.T) { testInit(t, bin) })
	t.Run("init-bad-command", func(t *testing.T) { testInitBadCommand(t, bin) })
}

// testRoot makes a directory that stands in for a guest's /.
func testRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"etc", "root", "run"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func testBoot(t *testing.T, bin string) {
	root := testRoot(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " test@host"
	cmdline := filepath.Join(root, "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyS0 banger.hostname=vm1 banger.dns=10.0.0.1 banger.grow=0 "+
		"banger.ip=10.0.0.2/24 banger.mtu=9 banger.ssh_key="+boot.EncodeSSHKey(key)+" banger.later=1\n"), 0o644)
	var stdout, stderr bytes.Buffer
	cmd := agentCmd(bin, map[string]string{agentcmd.EnvTestCmdline: cmdline, agentcmd.EnvTestRoot: root}, "boot")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("boot exited with %v (it must exit 0 even when duties fail)\nstderr: %s", err, stderr.String())
	}
	for _, want := range []string{"dns: done", "ssh-keys: done", "network: skipped", "grow: skipped", "ready: done", "hostname: failed"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, want := range []string{"banger.mtu", "banger.later", "boot duty hostname"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc", "resolv.conf")); !strings.Contains(string(data), "nameserver 10.0.0.1\n") {
		t.Errorf("resolv.conf = %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "root", ".ssh", "authorized_keys")); string(data) != key+"\n" {
		t.Errorf("authorized_keys = %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc", "hostname")); string(data) != "vm1\n" {
		t.Errorf("hostname file = %q", data)
	}
	if !boot.Ready(filepath.Join(root, "run", "banger", "ready")) {
		t.Error("no ready marker")
	}
}

// startAgent starts the binary with the test hooks set and args, and stops
// it (SIGKILL) at the end of the test if it is still running. exited
// receives Wait's result.
func startAgent(t *testing.T, bin string, env map[string]string, args ...string) (cmd *exec.Cmd, exited chan error, stderr *testutil.SyncBuffer) {
	t.Helper()
	stderr = &testutil.SyncBuffer{}
	cmd = agentCmd(bin, env, args...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})
	return cmd, exited, stderr
}

// stopAgent sends SIGTERM and requires a clean exit before ctx ends.
func stopAgent(ctx context.Context, t *testing.T, cmd *exec.Cmd, exited chan error, stderr *testutil.SyncBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exited with %v after SIGTERM\nstderr: %s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("agent did not stop on SIGTERM")
	}
}

// untilAnswer calls try until it succeeds, failing the test when ctx ends
// or the agent exits first.
func untilAnswer(ctx context.Context, t *testing.T, sock string, exited chan error, stderr *testutil.SyncBuffer, try func() error) {
	t.Helper()
	for {
		err := try()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never answered on %s: %v\nstderr: %s", sock, err, stderr.String())
		case err := <-exited:
			t.Fatalf("agent exited early: %v\nstderr: %s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func testServe(t *testing.T, bin, mode string) {
	root := testRoot(t)
	sock := filepath.Join(root, "agent.sock")
	cmdline := filepath.Join(root, "cmdline")
	os.WriteFile(cmdline, []byte("banger.grow=0 banger.dns=10.0.0.1\n"), 0o644)
	cmd, exited, stderr := startAgent(t, bin, map[string]string{agentcmd.EnvTestCmdline: cmdline, agentcmd.EnvTestRoot: root, agentcmd.EnvTestListen: sock}, mode)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.New(client.NetOpener("unix", sock), client.Config{Version: "test"})
	var hello client.Hello
	untilAnswer(ctx, t, sock, exited, stderr, func() (err error) { hello, err = c.Hello(ctx); return err })
	if hello.Version != testVersion {
		t.Errorf("hello version %q, want %q", hello.Version, testVersion)
	}
	for _, capName := range []string{"exec", "shutdown", "reboot", "sync-time"} {
		if !hello.Has(capName) {
			t.Errorf("agent does not announce %q: %v", capName, hello.Capabilities)
		}
	}

	readyFile := filepath.Join(root, "run", "banger", "ready")
	if mode == "serve" {
		// serve reports ready once a boot run has left its marker.
		h, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.Ready {
			t.Fatal("serve reports ready before any boot run")
		}
		os.MkdirAll(filepath.Dir(readyFile), 0o755)
		os.WriteFile(readyFile, []byte("done\n"), 0o644)
	}
	// run becomes ready by itself when its boot duties are done.
	for {
		h, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.Ready {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never became ready\nstderr: %s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if mode == "run" {
		if data, _ := os.ReadFile(filepath.Join(root, "etc", "resolv.conf")); !strings.Contains(string(data), "10.0.0.1") {
			t.Errorf("run did not do its boot duties: resolv.conf = %q", data)
		}
	}

	stopAgent(ctx, t, cmd, exited, stderr)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s left behind: %v", sock, err)
	}
	if regexp.MustCompile(`panic|fatal error`).MatchString(stderr.String()) {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// testInit runs init with a command to start after the boot duties: the
// command must see the duties' files, the agent's first answer must say
// ready, and SIGTERM must stop both.
func testInit(t *testing.T, bin string) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run as the command after the boot duties")
	}
	root := testRoot(t)
	sock := filepath.Join(root, "agent.sock")
	cmdline := filepath.Join(root, "cmdline")
	os.WriteFile(cmdline, []byte("banger.grow=0 banger.dns=10.0.0.7\n"), 0o644)
	seen := filepath.Join(root, "seen")
	pidFile := filepath.Join(root, "after.pid")
	// The command records what resolv.conf held when it started, then
	// stays up (as sshd would) until it is told to stop.
	script := "cp " + filepath.Join(root, "etc", "resolv.conf") + " " + seen + "; echo $$ > " + pidFile + "; exec sleep 600"
	cmd, exited, stderr := startAgent(t, bin, map[string]string{agentcmd.EnvTestCmdline: cmdline, agentcmd.EnvTestRoot: root, agentcmd.EnvTestListen: sock}, "init", "--", sh, "-c", script)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.New(client.NetOpener("unix", sock), client.Config{Version: "test"})
	var h client.HealthResult
	untilAnswer(ctx, t, sock, exited, stderr, func() (err error) { h, err = c.Health(ctx); return err })
	if !h.Ready {
		t.Error("init's first health answer says not ready: it did not wait for its boot duties")
	}
	var pid int
	for {
		data, _ := os.ReadFile(pidFile)
		if _, err := fmt.Sscan(string(data), &pid); err == nil && pid > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the command after the boot duties never ran\nstderr: %s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if data, _ := os.ReadFile(seen); !strings.Contains(string(data), "nameserver 10.0.0.7") {
		t.Errorf("the command started before the boot duties were done: it saw resolv.conf = %q", data)
	}

	stopAgent(ctx, t, cmd, exited, stderr)
	// The agent waited for its command, so it is gone, not a zombie.
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the command after the boot duties (pid %d) still runs after the agent stopped", pid)
	}
	if regexp.MustCompile(`panic|fatal error`).MatchString(stderr.String()) {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// testInitBadCommand: a command that cannot start is reported, and the
// agent serves anyway.
func testInitBadCommand(t *testing.T, bin string) {
	root := testRoot(t)
	sock := filepath.Join(root, "agent.sock")
	cmdline := filepath.Join(root, "cmdline")
	os.WriteFile(cmdline, []byte("banger.grow=0\n"), 0o644)
	missing := filepath.Join(root, "no-such-sshd")
	_, _, stderr := startAgent(t, bin, map[string]string{agentcmd.EnvTestCmdline: cmdline, agentcmd.EnvTestRoot: root, agentcmd.EnvTestListen: sock}, "init", "--", missing, "-D")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.New(client.NetOpener("unix", sock), client.Config{Version: "test"})
	for {
		h, err := c.Health(ctx)
		if err == nil && h.Ready {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never served: %v\nstderr: %s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for !strings.Contains(stderr.String(), "start "+missing+" after the boot duties") {
		select {
		case <-ctx.Done():
			t.Fatalf("the failed start is not reported:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
