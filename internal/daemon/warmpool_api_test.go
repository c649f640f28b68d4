package daemon_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/rpc"
	"banger/internal/store"
)

// TestDaemonStartRemovesLeftHelpersAndRefusesTheirNames: a helper VM a
// killed bangerd left is removed when bangerd starts, and users cannot
// make a VM under the helpers' prefix.
func TestDaemonStartRemovesLeftHelpersAndRefusesTheirNames(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "k", VmlinuxPath: "/nowhere/vmlinux", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(ctx, store.Image{ID: "i1", Name: "img", RootfsPath: "/nowhere/rootfs.ext4", KernelRef: "k", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	left := store.VM{ID: "0123456789abcdef", Name: "banger-warm-left", ImageID: "i1", KernelID: "k1", VCPUs: 1, MemoryBytes: 256 << 20,
		DiskBytes: 1 << 20, State: store.VMStopped, VMMRequested: "qemu", VMMKind: "qemu", COWKind: "copy", CreatedAt: now, UpdatedAt: now}
	if err := st.PutVM(ctx, left); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := start(t, cfg, nil)
	var got rpc.VM
	if err := r.client.Do(ctx, "GET", "/v1/vms/"+left.Name, nil, &got); err == nil {
		t.Fatalf("the left helper VM is still there: %+v", got)
	}
	var op rpc.Operation
	err = r.client.Do(ctx, "POST", "/v1/vms", rpc.CreateVMRequest{Name: "banger-warm-mine", Start: true}, &op)
	if err == nil || !strings.Contains(err.Error(), "warm pool") {
		t.Fatalf("vm run under the helpers' prefix = %v", err)
	}
}
