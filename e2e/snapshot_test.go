//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestSnapshotClone saves a running VM under QEMU, makes a clone from the
// snapshot, and checks that the clone resumed the parent's memory (a file
// on the parent's tmpfs, which no boot would have) under an identity of
// its own (host name, SSH host key), that the parent ran on throughout,
// and that the snapshot can be listed and removed.
func TestSnapshotClone(t *testing.T) {
	w := start(t)
	parent, clone := "parent", "clone"
	w.Must(t, "-q", "vm", "run", "e2e", "--name", parent, "--", "true")
	defer w.CLI("vm", "rm", "-f", parent)
	w.Must(t, "vm", "exec", parent, "--", "sh", "-c", "echo in-memory > /run/only-in-ram")
	// vm ssh records the parent's host keys.
	if stdout, stderr, code := w.CLISplit(nil, "vm", "ssh", parent, "--", "true"); code != 0 {
		t.Fatalf("vm ssh to the parent: exit %d\n%s%s", code, stdout, stderr)
	}

	w.Must(t, "-q", "vm", "snapshot", parent, "--name", "snap1")
	defer w.CLI("snapshot", "rm", "snap1")
	if out := w.Must(t, "vm", "exec", parent, "--", "cat", "/run/only-in-ram"); out != "in-memory\n" {
		t.Fatalf("the parent after its snapshot: %q", out)
	}
	var snaps []struct {
		Name      string
		VM        string
		SizeBytes int64 `json:"size_bytes"`
	}
	if err := json.Unmarshal([]byte(w.Must(t, "snapshot", "ls", "-o", "json")), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Name != "snap1" || snaps[0].SizeBytes <= 0 {
		t.Fatalf("snapshot ls: %+v", snaps)
	}

	w.Must(t, "-q", "vm", "create", "--from", "snap1", "--name", clone)
	defer w.CLI("vm", "rm", "-f", clone)
	w.Must(t, "-q", "vm", "start", clone)
	if out := w.Must(t, "vm", "exec", clone, "--", "cat", "/run/only-in-ram"); out != "in-memory\n" {
		t.Fatalf("the clone did not resume the parent's memory: %q", out)
	}
	if out := w.Must(t, "vm", "exec", clone, "--", "hostname"); strings.TrimSpace(out) != clone {
		t.Fatalf("the clone's host name is %q", out)
	}
	if kp, kc := knownHostsOf(t, w, parent), knownHostsOf(t, w, clone); kp == "" || kp == kc {
		t.Fatalf("the clone kept its parent's host key:\nparent: %s\nclone:  %s", kp, kc)
	}
	stdout, stderr, code := w.CLISplit(nil, "vm", "ssh", clone, "--", "hostname")
	if code != 0 || strings.TrimSpace(stdout) != clone {
		t.Fatalf("vm ssh to the clone: exit %d, %q\n%s", code, stdout, stderr)
	}
	if out := w.Must(t, "vm", "exec", parent, "--", "hostname"); strings.TrimSpace(out) != parent {
		t.Fatalf("the parent's host name changed to %q", out)
	}

	w.Must(t, "vm", "rm", "-f", clone)
	w.Must(t, "snapshot", "rm", "snap1")
	w.Must(t, "vm", "rm", "-f", parent)
	assertClean(t, w)
}

// knownHostsOf returns the host keys banger knows for VM name.
func knownHostsOf(t *testing.T, w *env, name string) string {
	t.Helper()
	var v struct {
		KnownHosts string `json:"known_hosts"`
	}
	if err := json.Unmarshal([]byte(w.Must(t, "vm", "inspect", name, "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(v.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	// The host names differ; compare the keys.
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			keys = append(keys, f[1]+" "+f[2])
		}
	}
	return strings.Join(keys, "\n")
}
