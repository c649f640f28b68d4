//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"banger/internal/rpc"
	"banger/internal/testutil"
	"banger/internal/testutil/ociregistry"
)

// TestDiskFull puts a state dir on a tmpfs with little room left and runs
// the operations that write most: each must fail with a reason that names
// the lack of space, leave the state dir as it found it, and leave the
// daemon and its store working.
func TestDiskFull(t *testing.T) {
	start(t)
	testutil.NeedRoot(t, "mount a small tmpfs for the state dir")
	e, err := newEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.Must(t, "-q", "kernel", "import", "--name", "k", kernelDeb)
	e.StopDaemon()
	// Move the state onto a tmpfs with 12 MiB to spare.
	_, used := tree(e.State)
	dbInfo, _ := os.Stat(e.State + "/banger.db")
	size := used + dbInfo.Size() + 12<<20
	saved := t.TempDir() + "/state"
	if out, err := exec.Command("cp", "-a", e.State, saved).CombinedOutput(); err != nil {
		t.Fatalf("copy the state dir: %v: %s", err, out)
	}
	os.RemoveAll(e.State)
	os.MkdirAll(e.State, 0o700)
	if err := syscall.Mount("tmpfs", e.State, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		e.StopDaemon()
		syscall.Unmount(e.State, syscall.MNT_DETACH)
	})
	if out, err := exec.Command("cp", "-a", saved+"/.", e.State).CombinedOutput(); err != nil {
		t.Fatalf("copy the state dir back: %v: %s", err, out)
	}
	reg := ociregistry.Start(t)
	ociRef := push(t, reg, "rel/full:1", bigLayerFiles(t))
	big := bigRootfs(t)
	cases := []struct {
		fault string
		args  []string
		prep  []string
	}{
		{fault: "image pull (OCI) of 48 MiB with 12 MiB free", args: []string{"image", "pull", ociRef, "--insecure", "--name", "oci", "--kernel", "k"}},
		{fault: "kernel import with 12 MiB free", args: []string{"kernel", "import", "--name", "k2", kernelDeb}},
		{fault: "image promote of 96 MiB with 12 MiB free", prep: []string{"image", "register", "un", "--rootfs", big, "--kernel", "k"}, args: []string{"image", "promote", "un"}},
	}
	for _, c := range cases {
		t.Run(c.fault, func(t *testing.T) {
			if c.prep != nil {
				e.Must(t, c.prep...)
			}
			waitTrashGone(e)
			before, _ := tree(e.State)
			id := startDetached(t, e, c.args)
			out, _ := e.CLI("op", "wait", id)
			o := e.op(t, id)
			survived := o.State == rpc.StateFailed
			saw := o.Error
			if saw == "" {
				saw = out
			}
			var problems []string
			if !survived {
				problems = append(problems, "operation "+o.State)
			}
			if !strings.Contains(strings.ToLower(saw), "space") {
				problems = append(problems, "the error does not say the disk is full")
				survived = false
			}
			after, _ := tree(e.State)
			if left := newPaths(before, after); len(left) > 0 {
				problems = append(problems, fmt.Sprintf("left behind: %v", left))
				survived = false
			}
			lost := ""
			if ls, code := e.CLI("kernel", "ls"); code != 0 || !strings.Contains(ls, "k") {
				lost = "the store no longer answers: " + firstLine(ls)
			}
			if len(problems) > 0 {
				saw = strings.Join(problems, "; ") + " / " + saw
			}
			record(t, result{area: "disk full", fault: c.fault, survived: survived, saw: saw, lost: lost})
		})
	}
}
