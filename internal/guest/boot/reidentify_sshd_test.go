package boot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"

	"golang.org/x/crypto/ssh"
)

// TestResumedKeysAreServedByARealSSHD runs the resume's host-key and sshd
// duties against a real sshd: the keys Go writes must load in sshd, the
// SIGHUP must make it serve them, and what it serves must be what the
// answer says.
func TestResumedKeysAreServedByARealSSHD(t *testing.T) {
	testutil.NeedRoot(t, "run sshd, which wants root and its privilege separation directory")
	testutil.NeedPath(t, "/usr/sbin/sshd", "run a real sshd (apt-get install openssh-server)")
	keyscan, err := exec.LookPath("ssh-keyscan")
	if err != nil {
		t.Skipf("no ssh-keyscan (apt-get install openssh-client): %v", err)
	}
	// sshd refuses to start without /run/sshd; make it for the test only.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot make /run/sshd: %v", err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
	env, _ := resumeRoot(t)
	dir := t.TempDir()
	env.SSHDPidFile = filepath.Join(dir, "sshd.pid")
	env.ReloadSSHD = nil // the real one: SIGHUP through a pidfd
	// The parent's keys, made by the resume code itself under another id.
	req := resumeRequest(t)
	req.ID = "parent"
	if _, err := Resume(context.Background(), req, env); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf("ListenAddress 127.0.0.1:%d\nHostKey %s\nHostKey %s\nPidFile %s\nUsePAM no\nPasswordAuthentication no\n",
		port, filepath.Join(env.SSHDir, "ssh_host_ed25519_key"), filepath.Join(env.SSHDir, "ssh_host_ecdsa_key"), env.SSHDPidFile)
	if err := os.WriteFile(config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// -r: no re-execution per connection, so the listener keeps the keys it
	// loaded (an sshd that re-executes reads them again for every
	// connection and would hide a missing reload).
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-r", "-f", config)
	var logs testutil.SyncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	parentKeys, _ := readHostKeys(env.SSHDir)
	waitServed(t, keyscan, port, parentKeys[1], &logs)

	req.ID = "clone-1"
	res, err := Resume(context.Background(), req, env)
	if err != nil {
		t.Fatalf("Resume: %v\n%+v", err, res)
	}
	if s := resumeStep(res, DutySSHD); s.Status != "done" {
		t.Fatalf("sshd step %+v", s)
	}
	// ecdsa sorts before ed25519.
	if res.HostKeys[1] == parentKeys[1] || res.HostKeys[0] == parentKeys[0] {
		t.Fatal("the keys did not change")
	}
	waitServed(t, keyscan, port, res.HostKeys[1], &logs)
	waitServed(t, keyscan, port, res.HostKeys[0], &logs)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitServed waits until sshd on port serves the host key of line.
func waitServed(t *testing.T, keyscan string, port int, line string, logs *testutil.SyncBuffer) {
	t.Helper()
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, _ := exec.Command(keyscan, "-T", "2", "-t", want.Type(), "-p", fmt.Sprint(port), "127.0.0.1").Output()
		last = string(out)
		for _, l := range strings.Split(last, "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[1] == want.Type() && f[2] == strings.Fields(line)[1] {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sshd does not serve %s (last scan %q); its log:\n%s", line, last, logs.String())
}
