package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/cli"
	"banger/internal/rpc"
)

// Two banger commands at once on a host with no daemon each start a
// bangerd; the one that loses the state dir's lock exits saying another
// runs. Its banger must then use the winner, not fail: the fake bangerd
// here loses, and the winner answers on the socket just after.
func TestAutostartLosingTheLockUsesTheWinner(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("BANGER_CONFIG", "")
	sockDir, err := os.MkdirTemp("", "bgas")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s.sock")
	mark := filepath.Join(home, "lost")
	script := filepath.Join(home, "bangerd")
	body := "#!/bin/sh\necho 'bangerd: another bangerd (pid 4242) already runs for state dir " + home + ": stop it with `banger daemon stop`, or give this one another state_dir' >&2\ntouch " + mark + "\nexit 1\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_DAEMON_BIN", script)

	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				break
			}
		}
		time.Sleep(100 * time.Millisecond) // the winner is still starting
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return
		}
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(rpc.VersionInfo{Version: "winner", PID: 4242})
		}))
	}()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"--socket", sock, "daemon", "start"}, strings.NewReader(""), &out, &errb)
	if code != cli.ExitOK || !strings.Contains(out.String(), "pid 4242") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, out.String(), errb.String())
	}
}
