//go:build reliability

package reliability

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/rpc"
	"banger/internal/testutil/ociregistry"
)

// opKind is one kind of long operation, started detached.
type opKind struct {
	name    string
	prepare func(t *testing.T, e *env) // before each run
	args    []string                   // the detached command (without --detach)
	listed  []string                   // a command whose output names the result when it exists
	result  string                     // the name it lists
	cleanup func(e *env)               // removes the result
}

func opKinds(t *testing.T) []opKind {
	reg := ociregistry.Start(t)
	ociRef := push(t, reg, "rel/big:1", bigLayerFiles(t))
	bigRoot := bigRootfs(t)
	return []opKind{
		{
			name:    "kernel import",
			args:    []string{"kernel", "import", "--name", "kk", kernelDeb},
			listed:  []string{"kernel", "ls"},
			result:  "kk",
			cleanup: func(e *env) { e.CLI("kernel", "rm", "kk") },
		},
		{
			name:    "image pull (OCI)",
			args:    []string{"image", "pull", ociRef, "--insecure", "--name", "oci", "--kernel", "k"},
			listed:  []string{"image", "ls"},
			result:  "oci",
			cleanup: func(e *env) { e.CLI("image", "rm", "oci") },
		},
		{
			name: "image promote",
			prepare: func(t *testing.T, e *env) {
				e.CLI("image", "rm", "un")
				e.Must(t, "image", "register", "un", "--rootfs", bigRoot, "--kernel", "k")
			},
			args:    []string{"image", "promote", "un"},
			listed:  []string{"image", "ls"},
			result:  "managed",
			cleanup: func(e *env) { e.CLI("image", "rm", "un") },
		},
		{
			name:    "vm create",
			args:    []string{"vm", "create", "img", "--name", "cc", "--disk", "2GiB"},
			listed:  []string{"vm", "ls"},
			result:  "cc",
			cleanup: func(e *env) { e.CLI("vm", "rm", "-f", "cc") },
		},
	}
}

// bigRootfs is an ext4 image with 96 MiB of incompressible data, so that
// copying it takes long enough to be caught in the middle.
func bigRootfs(t *testing.T) string {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "data"), 0o755)
	writeRandom(t, filepath.Join(tree, "data", "blob"), 96<<20)
	img := filepath.Join(dir, "big.ext4")
	mkfs(t, tree, img, "160M")
	return img
}

func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	buf := make([]byte, n)
	rand.Read(buf)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startDetached runs the command with --detach and returns the op id.
func startDetached(t *testing.T, e *env, args []string) string {
	t.Helper()
	stdout, stderr, code := e.CLISplit(nil, append(append([]string{}, args...), "--detach")...)
	out := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(out, "op-") {
		t.Fatalf("%v --detach: exit %d, printed %q\n%s", args, code, out, stderr)
	}
	return out
}

// phases runs the kind once, whole, and returns the phases it went
// through in order.
func phases(t *testing.T, e *env, k opKind) []string {
	t.Helper()
	if k.prepare != nil {
		k.prepare(t, e)
	}
	id := startDetached(t, e, k.args)
	var seen []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := e.watch(ctx, id, func(o rpc.Operation) bool {
		if k := phaseKey(o.Phase); k != "" && !contains(seen, k) {
			seen = append(seen, k)
		}
		return true
	}); err != nil {
		t.Fatalf("watch %s: %v", id, err)
	}
	if o := e.op(t, id); o.State != rpc.StateSucceeded {
		t.Fatalf("%s without a fault: %s: %s", k.name, o.State, o.Error)
	}
	k.cleanup(e)
	return seen
}

// phaseKey is a phase's first three words: phases may end in a path or an
// id that differs from run to run.
func phaseKey(p string) string {
	f := strings.Fields(p)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestKillAtEveryPhase SIGKILLs bangerd in each phase of each operation
// kind, then checks what the next daemon makes of it: the operation is
// recorded failed with a reason, no process of the old daemon is left, the
// state dir holds nothing the operation left half-made, and the same
// operation then succeeds.
func TestKillAtEveryPhase(t *testing.T) {
	e := start(t)
	for _, k := range opKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			ph := phases(t, e, k)
			t.Logf("%s phases: %q", k.name, ph)
			for i, p := range ph {
				killInPhase(t, e, k, i, p)
			}
			// After all that, the same work still succeeds.
			if k.prepare != nil {
				k.prepare(t, e)
			}
			out, code := e.CLI(append([]string{"-q"}, k.args...)...)
			k.cleanup(e)
			if code != 0 {
				t.Errorf("%s fails after the kills: %s", k.name, said(out))
			}
		})
	}
}

func killInPhase(t *testing.T, e *env, k opKind, idx int, phase string) {
	t.Helper()
	if k.prepare != nil {
		k.prepare(t, e)
	}
	waitTrashGone(e)
	before, _ := tree(e.State)
	id := startDetached(t, e, k.args)
	caught := ""
	if idx == 0 {
		// The first phase can pass before a watch attaches: kill as soon
		// as the operation exists.
		caught = phase
		e.kill(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	e.watch(ctx, id, func(o rpc.Operation) bool {
		if o.Terminal() {
			return false
		}
		if phaseKey(o.Phase) == phase {
			caught = o.Phase
			e.kill(t)
			return false
		}
		return true
	})
	cancel()
	fault := fmt.Sprintf("%s, phase %d %q", k.name, idx+1, phase)
	if caught == "" {
		t.Logf("%s: finished before the phase was seen; not counted", fault)
		k.cleanup(e)
		return
	}
	o := e.op(t, id) // starts the next daemon
	survived := true
	var problems []string
	if o.State == rpc.StateRunning || o.State == rpc.StateQueued {
		survived = false
		problems = append(problems, "operation still "+o.State)
	}
	// Give the new daemon's sweep a moment, then look for leftovers.
	time.Sleep(500 * time.Millisecond)
	waitTrashGone(e)
	if s := strays(e.State); len(s) > 0 {
		survived = false
		problems = append(problems, fmt.Sprintf("processes left: %v", s))
	}
	after, _ := tree(e.State)
	listed, _ := e.CLI(k.listed...)
	finished := o.State == rpc.StateSucceeded
	if left := newPaths(before, after); len(left) > 0 && !finished {
		survived = false
		problems = append(problems, fmt.Sprintf("left in the state dir: %v", left))
	}
	if !finished && strings.Contains(listed, k.result) && k.result != "managed" {
		survived = false
		problems = append(problems, k.result+" is listed though its operation failed")
	}
	k.cleanup(e)
	saw := o.Error
	if finished {
		saw = "(finished before the kill took effect)"
	}
	if len(problems) > 0 {
		saw = strings.Join(problems, "; ") + " / " + saw
	}
	record(t, result{area: "SIGKILL of bangerd", fault: fault, survived: survived, saw: saw})
}

// waitTrashGone waits (bounded) for background deletions to finish.
func waitTrashGone(e *env) {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ents, _ := os.ReadDir(filepath.Join(e.State, "vms"))
		busy := false
		for _, ent := range ents {
			busy = busy || strings.HasPrefix(ent.Name(), ".trash-")
		}
		if !busy {
			return
		}
	}
}
