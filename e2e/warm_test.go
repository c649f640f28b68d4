//go:build e2e

package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
)

// TestWarmPool runs the warm pool under QEMU in an env of its own whose
// default image is the test image: the first `vm run` boots cold and
// starts the pool, which saves a warm snapshot in the background; the next
// `vm run` in the default shape resumes a clone of it, says so in `vm
// inspect`, and works; one with a shape of its own boots cold.
func TestWarmPool(t *testing.T) {
	w := start(t)
	root := t.TempDir()
	run := testutil.ShortDir(t, "bgw")
	cfg := "vmm = \"qemu\"\ndefault_memory = \"512MiB\"\ndefault_disk_size = \"1GiB\"\nnetwork = \"user\"\nhosts_file = \"\"\nwarm = 1\ndefault_image_name = \"e2e\"\n"
	u, err := newEnv(w.Bin, filepath.Join(root, "home"), run, cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	defer u.StopDaemon()
	u.Must(t, "-q", "kernel", "import", "--name", "k", w.deb)
	u.Must(t, "-q", "image", "register", "e2e", "--rootfs", w.image, "--kernel", "k")

	u.Must(t, "-q", "vm", "run", "--name", "cold", "--", "true")
	if r := vmmReason(t, u, "cold"); strings.Contains(r, "resumed from warm") {
		t.Fatalf("the first run resumed: %s", r)
	}
	u.Must(t, "vm", "rm", "-f", "cold")

	deadline := time.Now().Add(4 * time.Minute)
	for !warmReady(t, u) {
		if time.Now().After(deadline) {
			t.Fatalf("no warm snapshot within 4 minutes; snapshot ls:\n%s", u.Must(t, "snapshot", "ls"))
		}
		time.Sleep(2 * time.Second)
	}

	out := u.Must(t, "-q", "vm", "run", "--name", "warm1", "--", "hostname")
	if strings.TrimSpace(out) != "warm1" {
		t.Fatalf("vm run from the warm pool printed %q", out)
	}
	if r := vmmReason(t, u, "warm1"); !strings.Contains(r, "resumed from warm snapshot") {
		t.Fatalf("the second run did not resume a warm snapshot: %s", r)
	}
	u.Must(t, "-q", "vm", "run", "--name", "big", "--cpus", "1", "--", "true")
	if r := vmmReason(t, u, "big"); strings.Contains(r, "resumed from warm") {
		t.Fatalf("a run with a shape of its own resumed the warm snapshot: %s", r)
	}
	u.Must(t, "vm", "rm", "-f", "warm1", "big")
}

func vmmReason(t *testing.T, u *env, name string) string {
	t.Helper()
	var v struct {
		VMMReason string `json:"vmm_reason"`
	}
	if err := json.Unmarshal([]byte(u.Must(t, "vm", "inspect", name, "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	return v.VMMReason
}

func warmReady(t *testing.T, u *env) bool {
	t.Helper()
	var snaps []struct {
		Warm  bool
		State string
	}
	if err := json.Unmarshal([]byte(u.Must(t, "snapshot", "ls", "-o", "json")), &snaps); err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s.Warm && s.State == "ready" {
			return true
		}
	}
	return false
}
