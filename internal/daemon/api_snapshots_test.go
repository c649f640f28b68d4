package daemon_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/rpc"
	"banger/internal/store"
)

// snapshotFixture records a kernel, an image, a stopped VM and a ready
// snapshot of it, with its files, in a fresh state dir.
func snapshotFixture(t *testing.T) (*running, store.Snapshot) {
	t.Helper()
	ctx := context.Background()
	cfg := testConfig(t)
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "kern", VmlinuxPath: "/nowhere/vmlinux", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(ctx, store.Image{ID: "i1", Name: "img", RootfsPath: "/nowhere/rootfs.ext4", KernelRef: "kern",
		OriginKind: store.OriginRegister, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutVM(ctx, store.VM{ID: "v1", Name: "dev", ImageID: "i1", KernelID: "k1", VCPUs: 1, MemoryBytes: 256 << 20,
		DiskBytes: 1 << 30, State: store.VMStopped, VMMRequested: "qemu", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cfg.StateDir, "snapshots", "s1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("saved"), 0o600); err != nil {
		t.Fatal(err)
	}
	sn := store.Snapshot{ID: "s1", Name: "snap1", VMID: "v1", VMName: "dev", ImageID: "i1", KernelID: "k1",
		VMMKind: "qemu", VMMVersion: "8.2.2", AgentVersion: "dev", VCPUs: 1, MemoryBytes: 256 << 20, DiskBytes: 1 << 30,
		Dir: dir, Files: []string{"state"}, SizeBytes: 5, State: store.SnapshotReady, CreatedAt: now}
	if err := st.PutSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	st.Close()
	return start(t, cfg, nil), sn
}

func TestSnapshotListAndInspect(t *testing.T) {
	r, sn := snapshotFixture(t)
	ctx := context.Background()
	var list []rpc.Snapshot
	if err := r.client.Do(ctx, "GET", "/v1/snapshots", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("snapshots = %+v, want the one recorded", list)
	}
	want := rpc.Snapshot{Name: "snap1", ID: "s1", VM: "dev", VMID: "v1", Image: "img", Kernel: "kern", VMM: "qemu",
		VMMVersion: "8.2.2", AgentVersion: "dev", VCPUs: 1, MemoryBytes: 256 << 20, DiskBytes: 1 << 30, Dir: sn.Dir,
		SizeBytes: 5, State: store.SnapshotReady}
	got := list[0]
	if got.Name != want.Name || got.ID != want.ID || got.VM != want.VM || got.VMID != want.VMID || got.Image != want.Image ||
		got.Kernel != want.Kernel || got.VMM != want.VMM || got.VMMVersion != want.VMMVersion || got.VCPUs != want.VCPUs ||
		got.MemoryBytes != want.MemoryBytes || got.DiskBytes != want.DiskBytes || got.Dir != want.Dir ||
		got.SizeBytes != want.SizeBytes || got.State != want.State || got.Warm || !got.CreatedAt.Equal(sn.CreatedAt) ||
		len(got.Files) != 1 || got.Files[0] != "state" {
		t.Fatalf("listed snapshot = %+v, want %+v with files [state]", got, want)
	}
	var one rpc.Snapshot
	if err := r.client.Do(ctx, "GET", "/v1/snapshots/snap1", nil, &one); err != nil {
		t.Fatal(err)
	}
	if one.Name != "snap1" || one.Image != "img" || one.AgentVersion != "dev" {
		t.Fatalf("inspected snapshot = %+v", one)
	}
	err := r.client.Do(ctx, "GET", "/v1/snapshots/nope", nil, &one)
	if !rpc.IsCode(err, rpc.CodeNotFound) || !strings.Contains(err.Error(), `snapshot "nope"`) {
		t.Fatalf("inspect of an unknown snapshot = %v, want not_found naming it", err)
	}
}

// TestSnapshotVMRefusals: what the API can refuse before an operation
// starts is refused with its reason and the right code, and starts none.
func TestSnapshotVMRefusals(t *testing.T) {
	r, _ := snapshotFixture(t)
	ctx := context.Background()
	for _, c := range []struct {
		vm   string
		req  rpc.SnapshotVMRequest
		code string
		want string
	}{
		{"ghost", rpc.SnapshotVMRequest{}, rpc.CodeNotFound, `VM "ghost"`},
		{"dev", rpc.SnapshotVMRequest{Name: "Bad_Name"}, rpc.CodeBadRequest, `snapshot name "Bad_Name" is not valid`},
		{"dev", rpc.SnapshotVMRequest{Name: "snap1"}, rpc.CodeConflict, `snapshot "snap1" already exists: pick another name with --name, or remove it (banger snapshot rm snap1)`},
		{"dev", rpc.SnapshotVMRequest{Name: "s2"}, rpc.CodeConflict, `VM "dev" is stopped: only a running VM can be snapshotted; start it first (banger vm start dev)`},
	} {
		err := r.client.Do(ctx, "POST", "/v1/vms/"+c.vm+"/snapshot", c.req, nil)
		if !rpc.IsCode(err, c.code) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("snapshot of %s %+v = %v, want %s with %q", c.vm, c.req, err, c.code, c.want)
		}
	}
	// A body that is not JSON is a bad request.
	if code, body := rawPost(t, r.info.Socket, "/v1/vms/dev/snapshot", "{not json"); code != http.StatusBadRequest || !strings.Contains(body, "decode request") {
		t.Errorf("snapshot with a broken body = %d %s, want 400 decode request", code, body)
	}
	requireNoOps(t, r.client)
}

// rawPost sends body as it is, which the typed client cannot.
func rawPost(t *testing.T, socket, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest("POST", "http://bangerd"+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(rpc.HeaderAPIVersion, strconv.Itoa(buildinfo.APIVersion))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func TestRemoveSnapshot(t *testing.T) {
	r, sn := snapshotFixture(t)
	ctx := context.Background()
	err := r.client.Do(ctx, "DELETE", "/v1/snapshots/nope", nil, nil)
	if !rpc.IsCode(err, rpc.CodeNotFound) || !strings.Contains(err.Error(), `snapshot "nope"`) {
		t.Fatalf("rm of an unknown snapshot = %v, want not_found naming it", err)
	}
	err = r.client.Do(ctx, "DELETE", "/v1/snapshots/snap1", nil, nil)
	if err != nil {
		t.Fatalf("rm snap1: %v", err)
	}
	if err := r.client.Do(ctx, "GET", "/v1/snapshots/snap1", nil, nil); !rpc.IsCode(err, rpc.CodeNotFound) {
		t.Fatalf("inspect after rm = %v, want not_found", err)
	}
	if _, err := os.Stat(sn.Dir); !os.IsNotExist(err) {
		t.Fatalf("the snapshot's directory outlived rm: %v", err)
	}
}
