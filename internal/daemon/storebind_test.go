package daemon_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/daemon/workspace"
	"banger/internal/rpc"
	"banger/internal/store"
)

// vmOnDisk is a VM's directory with a disk holding data the user cares
// about.
type vmOnDisk struct {
	dir, disk string
}

const guestData = "the guest's files"

// installWithVM makes what a daemon leaves behind: a store and state dir
// tied together (one daemon start), and a stopped VM with its row and its
// directory.
func installWithVM(t *testing.T, cfg config.Config) vmOnDisk {
	t.Helper()
	r := start(t, cfg, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	putVM(t, st, "0a1b2c3d4e5f6071")
	return vmDir(t, cfg, "0a1b2c3d4e5f6071")
}

// putVM records a stopped VM, named "precious" unless name says otherwise.
func putVM(t *testing.T, st *store.Store, id string, name ...string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := st.GetKernel(ctx, "k1"); err != nil {
		if err := st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "k1", VmlinuxPath: "/nonexistent/vmlinux", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutImage(ctx, store.Image{ID: "i1", Name: "i1", RootfsPath: "/nonexistent/rootfs.ext4", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	vmName := "precious"
	if len(name) > 0 {
		vmName = name[0]
	}
	if err := st.PutVM(ctx, store.VM{ID: id, Name: vmName, ImageID: "i1", KernelID: "k1", VCPUs: 1, MemoryBytes: 1 << 30,
		DiskBytes: 1 << 30, State: store.VMStopped, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
}

func vmDir(t *testing.T, cfg config.Config, id string) vmOnDisk {
	t.Helper()
	dir := filepath.Join(cfg.StateDir, "vms", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "root.ext4")
	if err := os.WriteFile(disk, []byte(guestData), 0o600); err != nil {
		t.Fatal(err)
	}
	return vmOnDisk{dir: dir, disk: disk}
}

// intact fails the test unless the VM's disk is where it was, unchanged.
func (v vmOnDisk) intact(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(v.disk); err != nil || string(b) != guestData {
		t.Fatalf("the VM's disk %s is gone or changed: %q, %v", v.disk, b, err)
	}
}

// orphaned returns where the VM's directory was moved aside to.
func (v vmOnDisk) orphaned(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(v.dir), ".orphaned-"+filepath.Base(v.dir)+"-*"))
	if len(m) != 1 {
		t.Fatalf("the VM's directory was not moved aside once: %v", m)
	}
	if b, err := os.ReadFile(filepath.Join(m[0], "root.ext4")); err != nil || string(b) != guestData {
		t.Fatalf("the VM's disk moved aside is gone or changed: %q, %v", b, err)
	}
	return m[0]
}

func runOnce(cfg config.Config, adopt bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Stderr: io.Discard, AdoptStore: adopt,
			OnReady: func(rpc.VersionInfo) { close(ready) }})
	}()
	select {
	case err := <-done:
		return err
	case <-ready:
		cancel()
		return <-done
	}
}

func wantIdentityError(t *testing.T, err error, says string) {
	t.Helper()
	var ie *store.IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("Run = %v, want a *store.IdentityError", err)
	}
	for _, w := range []string{says, "--adopt-store", "Nothing was changed"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestEmptiedStoreDeletesNoVM(t *testing.T) {
	for _, how := range []string{"truncated", "deleted"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			vm := installWithVM(t, cfg)
			path := daemon.StorePath(cfg)
			var err error
			if how == "truncated" {
				err = os.Truncate(path, 0)
			} else {
				err = os.Remove(path)
			}
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // refused every time, not only the first
				wantIdentityError(t, runOnce(cfg, false), "the store is empty")
				vm.intact(t)
			}
			// Adopting the empty store moves the VM aside, never deletes it.
			if err := runOnce(cfg, true); err != nil {
				t.Fatalf("Run --adopt-store: %v", err)
			}
			vm.orphaned(t)
			if err := runOnce(cfg, false); err != nil {
				t.Fatalf("Run after adopting: %v", err)
			}
			vm.orphaned(t)
		})
	}
}

func TestStoreFromAnotherStateDirIsRefused(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	other := testConfig(t)
	r := start(t, other, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(daemon.StorePath(other))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(daemon.StorePath(cfg), data, 0o600); err != nil {
		t.Fatal(err)
	}
	wantIdentityError(t, runOnce(cfg, false), "the store records state dir id")
	vm.intact(t)
}

func TestVMDirWithoutRowIsMovedAside(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	stray := vmDir(t, cfg, "ffeeddccbbaa9988")
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	vm.intact(t)
	stray.orphaned(t)
	// A create cut short before its row was recorded is deleted; a create
	// cut short after it is kept and committed.
	ws := workspace.New(cfg.StateDir)
	cut, err := ws.Create("1122334455667788")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Create("0a1b2c3d4e5f6072"); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "0a1b2c3d4e5f6072", "second")
	st.Close()
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	if ws.Uncommitted("0a1b2c3d4e5f6072") {
		t.Error("a VM with a row is still marked uncommitted")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "vms", "0a1b2c3d4e5f6072")); err != nil {
		t.Errorf("the directory of a VM with a row: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.StateDir, "vms", "*1122334455667788*")); len(m) != 0 {
		t.Errorf("a create cut short before its row left %v (was %s)", m, cut)
	}
	// A removal's trash is still deleted.
	trash := filepath.Join(cfg.StateDir, "vms", ".trash-0102030405060708")
	if err := os.MkdirAll(trash, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(trash); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trash of a removed VM was not deleted: %v", err)
	}
	stray.orphaned(t)
}

func TestStoreFromBeforeIDsIsUpgraded(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A store with a VM and no state dir id anywhere: what an install from
	// before ids has after its schema upgrade.
	st, err := store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "0a1b2c3d4e5f6071")
	st.Close()
	vm := vmDir(t, cfg, "0a1b2c3d4e5f6071")
	if err := runOnce(cfg, false); err != nil {
		t.Fatalf("Run on a store from before ids: %v", err)
	}
	vm.intact(t)
	id, err := store.ReadStateID(cfg.StateDir)
	if err != nil || id == "" {
		t.Fatalf("state dir id after upgrade: %q, %v", id, err)
	}
	st, err = store.Open(context.Background(), daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, err := st.StateID(context.Background()); err != nil || got != id {
		t.Errorf("store's state dir id = %q, %v; want %q", got, err, id)
	}
}

func TestStoreChangedUnderRunningDaemon(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			vm := installWithVM(t, cfg)
			r := start(t, cfg, nil)
			path := daemon.StorePath(cfg)
			switch how {
			case "deleted":
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			case "replaced":
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path+".new", data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path+".new", path); err != nil {
					t.Fatal(err)
				}
			}
			// Changes are refused at once...
			err := r.client.Do(context.Background(), "DELETE", "/v1/vms/precious", nil, nil)
			if !rpc.IsCode(err, rpc.CodeUnavailable) || !strings.Contains(err.Error(), how) || !strings.Contains(err.Error(), "while bangerd ran") {
				t.Errorf("vm rm with the store %s = %v, want it refused", how, err)
			}
			vm.intact(t)
			// ...and the daemon stops by itself, saying why.
			select {
			case err := <-r.done:
				close(r.done)
				if err == nil || !strings.Contains(err.Error(), path+" was "+how) {
					t.Errorf("daemon stopped with %v, want it to name the store %s", err, how)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the daemon went on running with its store " + how)
			}
			vm.intact(t)
			if how == "deleted" {
				// The next start refuses the new, empty store.
				wantIdentityError(t, runOnce(cfg, false), "the store is empty")
				vm.intact(t)
			}
		})
	}
}

func TestCorruptStoreIsRefusedAtStart(t *testing.T) {
	cfg := testConfig(t)
	vm := installWithVM(t, cfg)
	path := daemon.StorePath(cfg)
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range 300 {
		if err := st.PutOperation(context.Background(), store.Operation{ID: "op-" + strconv.FormatInt(int64(0x100000000000+i), 16),
			Kind: "pull", Target: strings.Repeat("x", 300), State: store.StateSucceeded, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := len(data) / 2 / 4096 * 4096
	for i := off; i < off+4096; i++ {
		data[i] = 0xa5
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	err = runOnce(cfg, false)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Run on a damaged store = %v, want a *store.CorruptError naming it", err)
	}
	vm.intact(t)
}

// Rows of another install (a store adopted or copied from elsewhere) name
// run dirs outside this daemon's runtime dir: starting must neither delete
// them nor kill the VMMs using them.
func TestForeignRunDirsAreLeftAlone(t *testing.T) {
	cfg := testConfig(t)
	r := start(t, cfg, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	stoppedRun := filepath.Join(other, "vms", "1111111111111111")
	runningRun := filepath.Join(other, "vms", "2222222222222222")
	for _, d := range []string{stoppedRun, runningRun} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "console.log"), []byte("boot"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	vmm := exec.Command("sh", "-c", "sleep 60; :", "vmm", filepath.Join(runningRun, "api.sock"))
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = vmm.Wait(); close(exited) }()
	t.Cleanup(func() { _ = vmm.Process.Kill(); <-exited })

	ctx := context.Background()
	st, err := store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	putVM(t, st, "1111111111111111", "stopped-vm")
	putVM(t, st, "2222222222222222", "running-vm")
	for id, run := range map[string]string{"1111111111111111": stoppedRun, "2222222222222222": runningRun} {
		v, err := st.GetVM(ctx, map[string]string{"1111111111111111": "stopped-vm", "2222222222222222": "running-vm"}[id])
		if err != nil {
			t.Fatal(err)
		}
		v.RunDir = run
		if id == "2222222222222222" {
			v.State, v.PID, v.VMMKind = store.VMRunning, vmm.Process.Pid, "qemu"
		}
		if err := st.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	if err := runOnce(cfg, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("a VMM using a run dir outside the runtime dir was killed: %v", vmm.ProcessState)
	case <-time.After(100 * time.Millisecond):
	}
	for _, d := range []string{stoppedRun, runningRun} {
		if _, err := os.Stat(filepath.Join(d, "console.log")); err != nil {
			t.Fatalf("run dir %s outside the runtime dir was removed: %v", d, err)
		}
	}
	st, err = store.Open(ctx, daemon.StorePath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.GetVM(ctx, "running-vm")
	if err != nil {
		t.Fatal(err)
	}
	if v.State != store.VMStopped || v.RunDir != "" || !strings.Contains(v.LastError, "runtime dir") {
		t.Fatalf("the foreign running VM is recorded as %s, run dir %q, error %q", v.State, v.RunDir, v.LastError)
	}
}
