package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/rpc"
	"banger/internal/store"
)

// requireNoOps fails when the daemon recorded any operation: a refused
// request must not start one.
func requireNoOps(t *testing.T, c *rpc.Client) {
	t.Helper()
	var ops []rpc.Operation
	if err := c.Do(context.Background(), "GET", "/v1/ops", nil, &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 0 {
		t.Fatalf("refused requests started operations: %+v", ops)
	}
}

func TestImagePullRefusesBadKernelAtOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.DefaultImageName = "debian-bookworm"
	r := start(t, cfg, nil)
	ctx := context.Background()
	for _, c := range []struct {
		req  rpc.PullRequest
		want string
	}{
		{rpc.PullRequest{Ref: "localhost:1/app:1", Kernel: "nope"},
			`--kernel "nope" is neither an installed kernel (none installed) nor in the kernel catalog (catalog: `},
		{rpc.PullRequest{Ref: "localhost:1/app:1", Kernel: "Bad_Name"}, `kernel name "Bad_Name" is not valid`},
		{rpc.PullRequest{Ref: "debian-bookworm", Kernel: "debian-6.1-amd64"}, `"debian-bookworm" is a catalog image, which boots the kernel its catalog entry names`},
	} {
		err := r.client.Do(ctx, "POST", "/v1/images/pull", c.req, nil)
		if !rpc.IsCode(err, rpc.CodeBadRequest) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pull %+v = %v, want bad_request with %q", c.req, err, c.want)
		}
	}
	requireNoOps(t, r.client)

	// Without --kernel, the catalog default image's kernel is a catalog
	// kernel, so the pull starts (and fails at the registry, which is not
	// there).
	var op rpc.Operation
	if err := r.client.Do(ctx, "POST", "/v1/images/pull", rpc.PullRequest{Ref: "localhost:1/app:1"}, &op); err != nil {
		t.Fatalf("pull with the default kernel was refused: %v", err)
	}
	if final := watch(t, r.client, op.ID, nil); final.State != rpc.StateFailed || strings.Contains(final.Error, "kernel") {
		t.Fatalf("pull of an absent registry = %s %q, want failed at the registry", final.State, final.Error)
	}
}

func TestImagePullDefaultKernelIsTheDefaultImages(t *testing.T) {
	ctx := context.Background()
	// A default image that is not in the catalog lends its own kernel; one
	// that names none leaves OCI pulls without a default.
	cfg := testConfig(t)
	cfg.DefaultImageName = "mine"
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []store.Image{
		{ID: "1", Name: "mine", RootfsPath: "/nowhere/mine.ext4", KernelRef: "not-installed", OriginKind: store.OriginRegister, CreatedAt: time.Now()},
		{ID: "2", Name: "bare", RootfsPath: "/nowhere/bare.ext4", OriginKind: store.OriginRegister, CreatedAt: time.Now()},
	} {
		if err := st.PutImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	r := start(t, cfg, nil)
	err = r.client.Do(ctx, "POST", "/v1/images/pull", rpc.PullRequest{Ref: "localhost:1/app:1"}, nil)
	if !rpc.IsCode(err, rpc.CodeBadRequest) || !strings.Contains(err.Error(), `the default kernel "not-installed" is neither an installed kernel`) {
		t.Fatalf("pull with the default image's kernel = %v", err)
	}
	requireNoOps(t, r.client)
	r.stop(t)

	cfg.DefaultImageName = "bare"
	r = start(t, cfg, nil)
	err = r.client.Do(ctx, "POST", "/v1/images/pull", rpc.PullRequest{Ref: "localhost:1/app:1"}, nil)
	if !rpc.IsCode(err, rpc.CodeBadRequest) || !strings.Contains(err.Error(), `the default image "bare" (default_image_name) names no kernel`) || !strings.Contains(err.Error(), "--kernel NAME") {
		t.Fatalf("pull with a default image that names no kernel = %v", err)
	}
	requireNoOps(t, r.client)
}

func TestCreateFromImageWithoutKernelSaysWhatToDo(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	// An OCI image as an older banger pulled it, and a registered one.
	for _, im := range []store.Image{
		{ID: "1", Name: "old-oci", Managed: true, RootfsPath: filepath.Join(cfg.StateDir, "images", "1", "rootfs.ext4"),
			OriginKind: store.OriginOCI, OriginRef: "registry.example/app:1", CreatedAt: time.Now()},
		{ID: "2", Name: "reg", RootfsPath: "/nowhere/reg.ext4", OriginKind: store.OriginRegister, CreatedAt: time.Now()},
	} {
		if err := st.PutImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	r := start(t, cfg, nil)
	for image, want := range map[string]string{
		"old-oci": `image "old-oci" names no kernel: it was pulled by an older banger; remove it (banger image rm old-oci) and pull it again with its kernel (banger image pull registry.example/app:1 --name old-oci --kernel NAME`,
		"reg":     `image "reg" names no kernel: remove it (banger image rm reg; your files stay) and register it again with --kernel NAME`,
	} {
		var op rpc.Operation
		req := rpc.CreateVMRequest{Name: "vm-" + image, Image: image, VCPUs: 1, Memory: 256 << 20, Disk: 1 << 30, VMM: "qemu"}
		if err := r.client.Do(ctx, "POST", "/v1/vms", req, &op); err != nil {
			t.Fatal(err)
		}
		final := watch(t, r.client, op.ID, nil)
		if final.State != rpc.StateFailed || !strings.Contains(final.Error, want) {
			t.Errorf("vm create from %s = %s %q, want failed with %q", image, final.State, final.Error, want)
		}
	}
	var vms []rpc.VM
	if err := r.client.Do(ctx, "GET", "/v1/vms", nil, &vms); err != nil || len(vms) != 0 {
		t.Fatalf("failed creates left VMs %+v (%v)", vms, err)
	}
}

// TestCreateRechecksRegisteredFiles replaces a registered image's rootfs
// with a link to a device after register checked it: vm create must check
// the file again and refuse it before it reads a byte.
func TestCreateRechecksRegisteredFiles(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) makes the image this test registers")
	}
	cfg := testConfig(t)
	r := start(t, cfg, nil)
	ctx := context.Background()
	rootfs := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rootfs, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := r.client.Do(ctx, "POST", "/v1/images/register", rpc.RegisterImageRequest{Name: "mine", Rootfs: rootfs, Kernel: "debian-6.1-amd64"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(rootfs); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", rootfs); err != nil {
		t.Fatal(err)
	}
	var op rpc.Operation
	if err := r.client.Do(ctx, "POST", "/v1/vms", rpc.CreateVMRequest{Name: "v", Image: "mine", VCPUs: 1, Memory: 256 << 20, Disk: 512 << 20, VMM: "qemu"}, &op); err != nil {
		t.Fatal(err)
	}
	final := watch(t, r.client, op.ID, nil)
	if final.State != rpc.StateFailed || !strings.Contains(final.Error, "refusing") || !strings.Contains(final.Error, "character device") {
		t.Fatalf("create from a rootfs replaced by a device = %s %q, want failed, refusing the device", final.State, final.Error)
	}
}
