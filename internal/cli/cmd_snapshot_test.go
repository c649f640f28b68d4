package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/cli"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/rpc"
	"banger/internal/store"
)

// TestSnapshotUsageErrors: what a snapshot fixes cannot be asked for
// again, and the snapshot commands check their arguments, all before the
// daemon is reached (exit 2, one clear line).
func TestSnapshotUsageErrors(t *testing.T) {
	noDaemonHome(t)
	cases := []struct {
		args []string
		err  string
	}{
		{[]string{"vm", "create", "--from", "s1", "img"}, "--from s1 and the image img both say what to start: a VM made from a snapshot runs the snapshot's image; drop one"},
		{[]string{"vm", "run", "--from", "s1", "img", "--", "true"}, "--from s1 and the image img both say what to start"},
		{[]string{"vm", "create", "--from", "s1", "--cpus", "2", "--memory", "1GiB"}, "--from s1 cannot be combined with --cpus, --memory: a snapshot resumes with its own vCPUs, memory, disk and VMM"},
		{[]string{"vm", "create", "--from", "s1", "--disk", "4GiB"}, "--from s1 cannot be combined with --disk"},
		{[]string{"vm", "run", "--from", "s1", "--vmm", "qemu", "--", "true"}, "--from s1 cannot be combined with --vmm"},
		{[]string{"vm", "snapshot"}, "banger vm snapshot takes one VM name (got 0 arguments)"},
		{[]string{"vm", "snapshot", "a", "b"}, "banger vm snapshot takes one VM name (got 2 arguments)"},
		{[]string{"vm", "snapshot", "dev", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"snapshot", "bogus"}, `unknown command "bogus" for "banger snapshot"`},
		{[]string{"snapshot", "ls", "extra"}, "banger snapshot ls takes no arguments"},
		{[]string{"snapshot", "ls", "-o", "yaml"}, "is not an output format"},
		{[]string{"snapshot", "inspect"}, "banger snapshot inspect takes one snapshot name"},
		{[]string{"snapshot", "rm"}, "banger snapshot rm needs at least one snapshot name"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := cli.Run(context.Background(), c.args, strings.NewReader(""), &out, &errb)
			if code != cli.ExitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, cli.ExitUsage, errb.String())
			}
			first := strings.SplitN(errb.String(), "\n", 2)[0]
			if !strings.HasPrefix(first, "banger: ") || !strings.Contains(first, c.err) {
				t.Fatalf("first stderr line %q, want 'banger: ...%s...'", first, c.err)
			}
		})
	}
}

// snapshotDaemon runs a daemon in-process over a store holding one ready
// snapshot "snap1" of VM "dev" (and a warm one whose VM is gone), and
// returns its socket.
// snapshotCLI runs the CLI against snapshotDaemon's daemon, in a HOME of
// the test's own that can never start another.
func snapshotCLI(t *testing.T) func(args ...string) (int, string, string) {
	t.Helper()
	noDaemonHome(t)
	sock := snapshotDaemon(t)
	return func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), append([]string{"--socket", sock}, args...), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
}

func snapshotDaemon(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	run, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{StateDir: filepath.Join(t.TempDir(), "state"), RuntimeDir: run, LogLevel: "debug"}
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Add(-3 * time.Hour)
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "kern", VmlinuxPath: "/nowhere/vmlinux", CreatedAt: now}))
	check(st.PutImage(ctx, store.Image{ID: "i1", Name: "img", RootfsPath: "/nowhere/rootfs.ext4", KernelRef: "kern",
		OriginKind: store.OriginRegister, CreatedAt: now}))
	put := func(st *store.Store, sn store.Snapshot) {
		t.Helper()
		sn.ImageID, sn.KernelID, sn.DiskBytes, sn.State, sn.CreatedAt = "i1", "k1", 1<<30, store.SnapshotReady, now
		sn.Dir = filepath.Join(cfg.StateDir, "snapshots", sn.ID)
		check(os.MkdirAll(sn.Dir, 0o700))
		check(st.PutSnapshot(ctx, sn))
	}
	put(st, store.Snapshot{ID: "s1", Name: "snap1", VMID: "v1", VMName: "dev", VMMKind: "qemu", VMMVersion: "8.2.2", VCPUs: 2,
		MemoryBytes: 512 << 20, SizeBytes: 300 << 20, Files: []string{"state", "root.img"}})
	st.Close()
	ready := make(chan rpc.VersionInfo, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Stderr: io.Discard,
			OnReady: func(v rpc.VersionInfo) { ready <- v }})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		os.RemoveAll(run)
	})
	select {
	case v := <-ready:
		// The warm snapshot goes in once the daemon runs: at its start,
		// with the pool off (cfg.Warm is 0 here), bangerd removes warm
		// snapshots.
		st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
		check(err)
		put(st, store.Snapshot{ID: "s2", Name: "warm-img", VMMKind: "qemu", VCPUs: 1, MemoryBytes: 256 << 20, SizeBytes: 100 << 20, Warm: true})
		st.Close()
		return v.Socket
	case err := <-done:
		t.Fatalf("daemon exited during start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not become ready")
	}
	return ""
}

func TestSnapshotListAndInspectOutput(t *testing.T) {
	runCLI := snapshotCLI(t)

	code, out, errs := runCLI("snapshot", "ls")
	if code != cli.ExitOK {
		t.Fatalf("snapshot ls: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"NAME", "VM", "IMAGE", "VMM", "MEMORY", "SIZE", "STATE", "WARM", "CREATED"},
		{"snap1", "dev", "img", "qemu", "512", "MiB", "300", "MiB", "ready", "no", "3h", "ago"},
		{"warm-img", "-", "img", "qemu", "256", "MiB", "100", "MiB", "ready", "yes", "3h", "ago"},
	}
	if len(lines) != len(want) {
		t.Fatalf("snapshot ls printed:\n%s", out)
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("snapshot ls line %d = %q, want the fields %q", i, l, want[i])
		}
	}

	code, out, errs = runCLI("snapshot", "ls", "-o", "json")
	var list []rpc.Snapshot
	if code != cli.ExitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 || list[0].Name != "snap1" ||
		list[0].MemoryBytes != 512<<20 || !list[1].Warm || len(list[0].Files) != 2 {
		t.Fatalf("snapshot ls -o json: exit %d, %s%s", code, out, errs)
	}

	code, out, errs = runCLI("snapshot", "inspect", "snap1")
	if code != cli.ExitOK {
		t.Fatalf("snapshot inspect: exit %d: %s", code, errs)
	}
	for _, w := range []string{"vm       dev v1", "vmm      qemu 8.2.2", "vcpus    2", "memory   512 MiB", "disk     1.0 GiB", "files    state root.img", "warm     no"} {
		if !strings.Contains(out, w) {
			t.Errorf("snapshot inspect lacks %q:\n%s", w, out)
		}
	}

	code, _, errs = runCLI("snapshot", "inspect", "nope")
	if code != cli.ExitFailure || !strings.Contains(errs, `banger: snapshot "nope": not found`) {
		t.Errorf("snapshot inspect nope: exit %d, %s", code, errs)
	}
	code, _, errs = runCLI("vm", "snapshot", "ghost")
	if code != cli.ExitFailure || !strings.Contains(errs, `banger: VM "ghost": not found`) {
		t.Errorf("vm snapshot ghost: exit %d, %s", code, errs)
	}
	code, out, errs = runCLI("snapshot", "rm", "nope", "also-nope")
	if code != cli.ExitFailure || out != "" || strings.Count(errs, "not found") != 2 {
		t.Errorf("snapshot rm of unknown snapshots: exit %d, %s%s", code, out, errs)
	}
	// Dot names are names, not path steps the daemon's router cleans away
	// (DELETE /v1, or the whole list read as one snapshot).
	for _, args := range [][]string{{"snapshot", "rm", ".."}, {"snapshot", "rm", "."}, {"snapshot", "inspect", "."},
		{"snapshot", "inspect", ".."}} {
		code, out, errs = runCLI(args...)
		if code != cli.ExitFailure || !strings.Contains(errs, "not found") || strings.Contains(errs, "no endpoint") {
			t.Errorf("%v: exit %d, %s%s", args, code, out, errs)
		}
	}
	code, _, errs = runCLI("vm", "snapshot", "..")
	if code != cli.ExitFailure || !strings.Contains(errs, `VM "..": not found`) {
		t.Errorf("vm snapshot ..: exit %d, %s", code, errs)
	}
}
