package qemuproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// fdMonitor is a QMP monitor that takes descriptors passed with SCM_RIGHTS
// as QEMU does: getfd names the last one received, migrate writes stream
// into it, and query-migrate answers status.
func fdMonitor(t *testing.T, stream, status string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, `{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}, "capabilities": []}}`)
		named := map[string]int{}
		pending := -1
		buf, oob := make([]byte, 4096), make([]byte, 256)
		var data []byte
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) > 0 {
				if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) > 0 {
					pending = fds[0]
				}
			}
			data = append(data, buf[:n]...)
			dec := json.NewDecoder(bytes.NewReader(data))
			for {
				var req struct {
					Execute   string         `json:"execute"`
					Arguments map[string]any `json:"arguments"`
					ID        string         `json:"id"`
				}
				if dec.Decode(&req) != nil {
					break
				}
				data = data[dec.InputOffset():]
				dec = json.NewDecoder(bytes.NewReader(data))
				ret := `{}`
				switch req.Execute {
				case "getfd":
					named[req.Arguments["fdname"].(string)], pending = pending, -1
				case "migrate":
					fd := named[strings.TrimPrefix(req.Arguments["uri"].(string), "fd:")]
					unix.Write(fd, []byte(stream))
					unix.Close(fd)
				case "query-migrate":
					ret = fmt.Sprintf(`{"status": %q, "error-desc": "disk full"}`, status)
				}
				fmt.Fprintf(c, `{"return": %s, "id": %q}`+"\n", ret, req.ID)
			}
		}
	}()
	return sock
}

// The state file gets what QEMU wrote to the descriptor it was handed,
// and only once the migration completed.
func TestMigrateToFileThroughDescriptor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct{ status, want string }{{"completed", ""}, {"failed", "the migration failed: disk full"}} {
		q, err := DialQMP(ctx, fdMonitor(t, "QEVM stream", c.status))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), StateFileName)
		err = migrateToFile(ctx, q, path)
		q.Close()
		b, rerr := os.ReadFile(path)
		if c.want == "" && (err != nil || string(b) != "QEVM stream") {
			t.Errorf("completed: %v; file %q, %v", err, b, rerr)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !os.IsNotExist(rerr)) {
			t.Errorf("failed: %v; file %q, %v", err, b, rerr)
		}
		if _, err := os.Stat(path + ".part"); !os.IsNotExist(err) {
			t.Errorf("%s: the partial file is left: %v", c.status, err)
		}
	}
}

// TestVMMVersionAsksOncePerBinary: a stand-in QEMU that counts its runs is
// asked once however often VMMVersion is called, and again once the file
// is replaced.
func TestVMMVersionAsksOncePerBinary(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	bin := filepath.Join(dir, "qemu-system-x86_64")
	write := func(version string) {
		t.Helper()
		script := "#!/bin/sh\necho x >> " + count + "\necho 'QEMU emulator version " + version + "'\n"
		tmp := bin + ".new"
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	runs := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "x")
	}
	write("7.2.22")
	d := NewDriver(bin)
	ctx := context.Background()
	for range 3 {
		if v, err := d.VMMVersion(ctx); err != nil || v != "7.2.22" {
			t.Fatalf("VMMVersion = %q, %v", v, err)
		}
	}
	if n := runs(); n != 1 {
		t.Fatalf("the binary ran %d times for three asks, want 1", n)
	}
	time.Sleep(10 * time.Millisecond) // a new modification time
	write("8.2.2-longer")
	if v, err := d.VMMVersion(ctx); err != nil || v != "8.2.2-longer" || runs() != 2 {
		t.Fatalf("after the binary was replaced: %q, %v, %d runs", v, err, runs())
	}
}
