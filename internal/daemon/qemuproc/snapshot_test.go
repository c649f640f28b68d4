package qemuproc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"banger/internal/daemon/vmm"
)

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022\n": "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
		"QEMU emulator version 9.1.0\nCopyright\n":                                                  "9.1.0",
	} {
		if got, err := parseVersion(in); err != nil || got != want {
			t.Errorf("parseVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "qemu 7", "Copyright\nQEMU emulator version"} {
		if got, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	f.Add("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n")
	f.Add("QEMU emulator version 8.0.0 (\n")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseVersion(s)
		if err == nil && (v == "" || strings.Contains(v, "\n")) {
			t.Errorf("parseVersion(%q) = %q", s, v)
		}
	})
}

// A restoring QEMU gets the state file as its last descriptor, read-only,
// and -incoming names that descriptor.
func TestIncomingDescriptor(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vm := filepath.Join(dir, "vm")
	if err := os.Mkdir(vm, 0o700); err != nil {
		t.Fatal(err)
	}
	pl := &plan{cfg: Config{Dir: vm, Kernel: write("vmlinux"), Drives: []Drive{{Path: write("root")}},
		Incoming: write(StateFileName)}, accel: AccelTCG}
	files, err := pl.openFiles(false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	args := pl.args()
	i := slices.Index(args, "-incoming")
	want := "fd:" + strconv.Itoa(len(files)+2)
	if i < 0 || args[i+1] != want {
		t.Fatalf("args %q: want -incoming %s", args, want)
	}
	if last := files[len(files)-1]; last.Name() != pl.cfg.Incoming {
		t.Errorf("last descriptor is %s, want the state file", last.Name())
	}
	pl.cfg.Incoming = ""
	if slices.Contains(pl.args(), "-incoming") {
		t.Error("-incoming without a saved state")
	}
	pl.cfg.Incoming = filepath.Join(dir, "missing")
	os.Remove(QMPSocketPath(vm))
	os.Remove(AgentSocketPath(vm))
	if f, err := pl.openFiles(false); err == nil || !strings.Contains(err.Error(), "open the saved state") {
		closeAll(f)
		t.Errorf("a missing state: %v", err)
	}
}

func TestFinishIncomingStates(t *testing.T) {
	ctx := context.Background()
	if done, err := finishIncoming(ctx, t.TempDir(), Status{Status: "running", Running: true}); !done || err != nil {
		t.Errorf("running: %v, %v", done, err)
	}
	if done, err := finishIncoming(ctx, t.TempDir(), Status{Status: "inmigrate"}); done || err != nil {
		t.Errorf("inmigrate: %v, %v", done, err)
	}
	if _, err := finishIncoming(ctx, t.TempDir(), Status{Status: "shutdown"}); err == nil || !strings.Contains(err.Error(), `"shutdown" while loading`) {
		t.Errorf("shutdown: %v", err)
	}
}

// The driver refuses a state that does not fit before it starts QEMU.
func TestDriverRestoreRefusesMismatch(t *testing.T) {
	d := NewDriver("")
	if _, err := d.VMMVersion(context.Background()); err != nil {
		t.Skipf("no QEMU version here: %v", err)
	}
	spec := vmm.Spec{RunDir: t.TempDir(), MemoryMiB: 512, VCPUs: 1, Drives: []string{"/nonexistent"}}
	st := vmm.State{VMM: vmm.QEMU, VMMVersion: "1.0.0", Emulated: true, Files: []string{StateFileName}}.WithShape(spec)
	spec.Restore = &vmm.Restore{Dir: t.TempDir(), State: st}
	_, _, err := d.Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "vmm version is 1.0.0") {
		t.Errorf("Start with a state of another QEMU: %v", err)
	}
	if _, err := os.Stat(QMPSocketPath(spec.RunDir)); !os.IsNotExist(err) {
		t.Errorf("QEMU was started: %v", err)
	}
}
