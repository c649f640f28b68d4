package imagemgr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/imagemgr"
	"banger/internal/store"
)

type fixture struct {
	st    *store.Store
	m     *imagemgr.Manager
	state string
	user  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	st, err := store.Open(context.Background(), filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := imagemgr.New(st, state, func() (string, error) { return os.Executable() })
	return &fixture{st: st, m: m, state: state, user: t.TempDir()}
}

// userFile writes a file of the user's with random data and a zero run in
// the middle, and returns its path and content.
func (f *fixture) userFile(t *testing.T, name string, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	for i := size / 4; i < size/2; i++ {
		data[i] = 0
	}
	p := filepath.Join(f.user, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// ext4File writes a file of the user's that passes for an ext4 image: a
// superblock at byte 1024, random data after it with a zero run in the
// middle. It returns its path and content.
func (f *fixture) ext4File(t *testing.T, name string, size int) (string, []byte) {
	t.Helper()
	p, data := f.userFile(t, name, size)
	copy(data[:4096], make([]byte, 4096))
	le := binary.LittleEndian
	le.PutUint32(data[1024+0x00:], 64)                // inodes
	le.PutUint32(data[1024+0x04:], uint32(size/1024)) // blocks of 1 KiB
	le.PutUint32(data[1024+0x20:], 8192)              // blocks per group
	le.PutUint32(data[1024+0x28:], 64)                // inodes per group
	le.PutUint16(data[1024+0x38:], 0xEF53)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// addKernel records an installed kernel named name.
func (f *fixture) addKernel(t *testing.T, name string) {
	t.Helper()
	if err := f.st.PutKernel(context.Background(), store.Kernel{ID: "k-" + name, Name: name, VmlinuxPath: "/v", CreatedAt: testNow()}); err != nil {
		t.Fatal(err)
	}
}

type snapshot map[string]string

// snap records every file under dir with its content and mode, to prove that
// nothing of the user's changed.
func snap(t *testing.T, dir string) snapshot {
	t.Helper()
	s := snapshot{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String() + " " + fi.ModTime().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		s[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameSnap(t *testing.T, before, after snapshot) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("user dir changed: %d entries before, %d after", len(before), len(after))
	}
	for p, v := range before {
		if after[p] != v {
			t.Fatalf("user file %s changed", p)
		}
	}
}

func TestRegisterPromoteRemoveLeavesUserFilesAlone(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "debian-6-1")
	rootfs, rootData := f.ext4File(t, "rootfs.ext4", 3<<20+17)
	seed, _ := f.ext4File(t, "seed.ext4", 1<<20)
	mods := filepath.Join(f.user, "modules", "6.1.0")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mods, "modules.order"), []byte("kernel/x.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snap(t, f.user)

	im, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "mine", Rootfs: rootfs, WorkSeed: seed,
		Kernel: "debian-6-1", ModulesDir: filepath.Join(f.user, "modules")})
	if err != nil {
		t.Fatal(err)
	}
	if im.Managed || im.RootfsPath != rootfs || im.SizeBytes != int64(len(rootData)) || im.OriginKind != store.OriginRegister {
		t.Fatalf("registered = %+v", im)
	}
	sameSnap(t, before, snap(t, f.user))

	// Promote copies into the state dir and verifies; sources untouched.
	promoted, err := f.m.PromoteImage(ctx, "mine", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !promoted.Managed || !strings.HasPrefix(promoted.RootfsPath, f.state) || !strings.HasPrefix(promoted.Digest, "sha256:") {
		t.Fatalf("promoted = %+v", promoted)
	}
	got, err := os.ReadFile(promoted.RootfsPath)
	if err != nil || !bytes.Equal(got, rootData) {
		t.Fatalf("managed rootfs differs from the source (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(promoted.ModulesDir, "6.1.0", "modules.order")); err != nil {
		t.Fatalf("modules not copied: %v", err)
	}
	sameSnap(t, before, snap(t, f.user))
	if _, err := f.m.PromoteImage(ctx, "mine", nil); err == nil || !strings.Contains(err.Error(), "already managed") {
		t.Fatalf("second promote = %v", err)
	}

	// Removing the managed image deletes its copies, never the user's files.
	if err := f.m.RemoveImage(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(promoted.RootfsPath)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("managed dir left after rm: %v", err)
	}
	sameSnap(t, before, snap(t, f.user))
	if _, err := f.m.Image(ctx, "mine"); !errors.Is(err, imagemgr.ErrNotFound) {
		t.Fatalf("image after rm = %v", err)
	}
}

func TestRemoveUnmanagedKeepsFiles(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "k")
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 1<<20)
	before := snap(t, f.user)
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "u", Rootfs: rootfs, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := f.m.RemoveImage(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	sameSnap(t, before, snap(t, f.user))
}

func TestRegisterRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addKernel(t, "k")
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 8192)
	cases := []struct {
		req  imagemgr.RegisterRequest
		want string
	}{
		{imagemgr.RegisterRequest{Name: "Bad_Name", Rootfs: rootfs, Kernel: "k"}, "not valid"},
		{imagemgr.RegisterRequest{Name: "../etc", Rootfs: rootfs, Kernel: "k"}, "not valid"},
		{imagemgr.RegisterRequest{Name: "a/b", Rootfs: rootfs, Kernel: "k"}, "not valid"},
		{imagemgr.RegisterRequest{Name: "-x", Rootfs: rootfs, Kernel: "k"}, "start and end with a letter or digit"},
		{imagemgr.RegisterRequest{Name: "a..b", Rootfs: rootfs, Kernel: "k"}, `contains ".."`},
		{imagemgr.RegisterRequest{Name: strings.Repeat("a", 64), Rootfs: rootfs, Kernel: "k"}, "longer than 63"},
		{imagemgr.RegisterRequest{Name: "ok", Kernel: "k"}, "rootfs path is required"},
		{imagemgr.RegisterRequest{Name: "ok", Rootfs: filepath.Join(f.user, "missing"), Kernel: "k"}, "no such file"},
		{imagemgr.RegisterRequest{Name: "ok", Rootfs: f.user, Kernel: "k"}, "is a directory, not a regular file"},
		{imagemgr.RegisterRequest{Name: "ok", Rootfs: rootfs, ModulesDir: rootfs, Kernel: "k"}, "not a directory"},
		{imagemgr.RegisterRequest{Name: "ok", Rootfs: rootfs, Kernel: "Nope!"}, "kernel name"},
	}
	for _, c := range cases {
		if _, err := f.m.RegisterImage(ctx, c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RegisterImage(%+v) = %v, want error containing %q", c.req, err, c.want)
		}
	}
	ims, _ := f.m.Images(ctx)
	if len(ims) != 0 {
		t.Fatalf("bad input registered %v", ims)
	}
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "ok", Rootfs: rootfs, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "ok", Rootfs: rootfs, Kernel: "k"}); !errors.Is(err, imagemgr.ErrExists) {
		t.Fatalf("duplicate = %v, want ErrExists", err)
	}
}

func TestRemoveRefusesImageInUse(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	rootfs, _ := f.ext4File(t, "rootfs.ext4", 8192)
	k := store.Kernel{ID: "k", Name: "k", VmlinuxPath: "/x", CreatedAt: time.Now()}
	if err := f.st.PutKernel(ctx, k); err != nil {
		t.Fatal(err)
	}
	im, err := f.m.RegisterImage(ctx, imagemgr.RegisterRequest{Name: "used", Rootfs: rootfs, Kernel: "k"})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", f.st.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ts := time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z")
	if _, err := db.Exec(`INSERT INTO vms (id, name, image_id, kernel_id, vcpus, memory_bytes, disk_bytes, created_at, updated_at)
		VALUES ('v', 'web', ?, 'k', 1, 1, 1, ?, ?)`, im.ID, ts, ts); err != nil {
		t.Fatal(err)
	}
	err = f.m.RemoveImage(ctx, "used")
	if err == nil || !strings.Contains(err.Error(), `used by VM web`) {
		t.Fatalf("RemoveImage in use = %v", err)
	}
	if err := f.m.RemoveKernel(ctx, "k"); err == nil || !strings.Contains(err.Error(), "used by VM web") {
		t.Fatalf("RemoveKernel in use = %v", err)
	}
}

func testNow() time.Time { return time.Now().UTC() }
