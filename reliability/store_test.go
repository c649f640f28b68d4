//go:build reliability

package reliability

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
)

// storeEnv is an env with one created VM, "keep", whose disk must survive
// whatever happens to the store.
type storeEnv struct {
	*env
	vmDir, diskSum string
}

func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	start(t)
	e, err := newEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.Must(t, "-q", "kernel", "import", "--name", "k", kernelDeb)
	e.Must(t, "image", "register", "img", "--rootfs", smallImage, "--kernel", "k")
	e.Must(t, "-q", "vm", "create", "img", "--name", "keep")
	var v struct{ ID, Disk string }
	if err := json.Unmarshal([]byte(e.Must(t, "vm", "inspect", "keep", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	s := &storeEnv{env: e, vmDir: filepath.Join(e.State, "vms", v.ID)}
	s.diskSum = s.sum(t)
	if s.diskSum == "" {
		t.Fatalf("the VM's directory %s holds no disk", s.vmDir)
	}
	t.Cleanup(e.StopDaemon)
	return s
}

// sum hashes every regular file of the VM's directory ("" when it is gone).
func (s *storeEnv) sum(t *testing.T) string {
	h := sha256.New()
	n := 0
	filepath.Walk(s.vmDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		io.WriteString(h, p)
		io.Copy(h, f)
		n++
		return nil
	})
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *storeEnv) db() string { return filepath.Join(s.State, "banger.db") }

// saveDB stops the daemon and copies the store aside.
func (s *storeEnv) saveDB(t *testing.T) string {
	t.Helper()
	s.StopDaemon()
	saved := filepath.Join(t.TempDir(), "banger.db")
	if out, err := exec.Command("cp", "-a", s.db(), saved).CombinedOutput(); err != nil {
		t.Fatalf("copy the store: %v: %s", err, out)
	}
	return saved
}

// restoreDB stops any daemon and puts the saved store back; the VM must
// then be listed again, with its disk unchanged.
func (s *storeEnv) restoreDB(t *testing.T, saved string) (lost string) {
	t.Helper()
	s.StopDaemon()
	exec.Command("chattr", "-i", s.db()).Run()
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(s.db() + suffix)
	}
	if out, err := exec.Command("cp", "-a", saved, s.db()).CombinedOutput(); err != nil {
		t.Fatalf("restore the store: %v: %s", err, out)
	}
	out, code := s.CLI("vm", "ls")
	switch {
	case code != 0:
		return "the store did not work again once restored: " + firstLine(out)
	case !strings.Contains(out, "keep"):
		return "the VM's row is gone"
	}
	return s.checkDisk()
}

func (s *storeEnv) checkDisk() string {
	switch sum := s.sum(nil); {
	case sum == "":
		return "the VM's directory was deleted"
	case sum != s.diskSum:
		return "the VM's disk changed"
	}
	return ""
}

// TestStoreFaults damages the store in the ways a careless user, a full
// disk or a bad tool would, and checks that banger refuses to guess and
// never deletes a VM it cannot prove is garbage.
func TestStoreFaults(t *testing.T) {
	s := newStoreEnv(t)
	cases := []struct {
		fault   string
		root    bool
		running bool // applied under a running daemon
		apply   func(t *testing.T)
	}{
		{fault: "emptied (truncated to 0 bytes)", apply: func(t *testing.T) { os.Truncate(s.db(), 0) }},
		{fault: "deleted", apply: func(t *testing.T) { os.Remove(s.db()) }},
		{fault: "corrupted (4 KiB of noise at 8 KiB)", apply: func(t *testing.T) {
			f, err := os.OpenFile(s.db(), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			noise := make([]byte, 4096)
			rand.Read(noise)
			f.WriteAt(noise, 8192)
			f.Close()
		}},
		{fault: "read-only (immutable file)", root: true, apply: func(t *testing.T) {
			if out, err := exec.Command("chattr", "+i", s.db()).CombinedOutput(); err != nil {
				t.Skipf("chattr +i is not supported here: %s", out)
			}
		}},
		{fault: "deleted under a running daemon", running: true, apply: func(t *testing.T) {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(s.db() + suffix)
			}
		}},
		{fault: "replaced by an empty store under a running daemon", running: true, apply: func(t *testing.T) {
			empty := filepath.Join(t.TempDir(), "empty.db")
			os.WriteFile(empty, nil, 0o600)
			os.Rename(empty, s.db())
		}},
	}
	for _, c := range cases {
		t.Run(c.fault, func(t *testing.T) {
			if c.root {
				testutil.NeedRoot(t, "make files immutable (chattr +i)")
			}
			saved := s.saveDB(t)
			if c.running {
				s.Must(t, "vm", "ls")
			}
			c.apply(t)
			var saw string
			if c.running {
				// Destructive work after the fault, then a restart.
				out, _ := s.CLI("vm", "ls")
				saw = out
				time.Sleep(200 * time.Millisecond)
				s.StopDaemon()
			}
			out, code := s.CLI("vm", "ls")
			if saw == "" || code != 0 {
				saw = out
			}
			lost := s.checkDisk()
			if l := s.restoreDB(t, saved); lost == "" {
				lost = l
			}
			survived := lost == "" && (code != 0 || strings.Contains(out, "keep"))
			record(t, result{area: "store", fault: c.fault, survived: survived, saw: saw, lost: lost})
		})
	}
}
