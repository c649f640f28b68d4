package ociimage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func TestImportAppliesLayersIntoExt4(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	reg := startRegistry(t)
	out := t.TempDir()
	xattrs := userXattrsSupported(t, out)

	l1 := mkTar(t,
		dir("etc/", 0o755, 0, 0),
		file("etc/keep", "old\n", 0o644, 0, 0),
		file("etc/gone", "bye\n", 0o644, 0, 0),
		dir("opt/", 0o755, 0, 0),
		dir("opt/old/", 0o755, 0, 0),
		file("opt/old/a", "a\n", 0o644, 0, 0),
		dir("opt/old/sub/", 0o755, 0, 0),
		file("opt/old/sub/b", "b\n", 0o644, 0, 0),
		dir("bin/", 0o755, 0, 0),
		file("bin/tool", "#!/bin/sh\n", 0o4755, 0, 0),
		dir("tmp/", 0o1777, 0, 0),
		dir("home/", 0o755, 0, 0),
		dir("home/user/", 0o750, 1000, 1000),
		file("home/user/notes", "secret\n", 0o640, 1000, 1001),
	)
	l2 := mkTar(t,
		file("etc/.wh.gone", "", 0o644, 0, 0),
		dir("opt/old/", 0o755, 0, 0),
		file("opt/old/.wh..wh..opq", "", 0o644, 0, 0),
		file("opt/old/new", "new\n", 0o644, 0, 0),
		withXattr(file("etc/keep", "new\n", 0o600, 0, 0), "user.note", "kept"),
	)
	l3 := mkTar(t,
		dir("usr/", 0o755, 0, 0),
		dir("usr/bin/", 0o755, 0, 0),
		file("usr/bin/busybox", "bb", 0o755, 0, 0),
		symlink("usr/bin/sh", "busybox"),
		symlink("lib", "usr/lib"),
		hardlink("bin/tool2", "bin/tool"),
		dir("dev/", 0o755, 0, 0),
		chardev("dev/null", 1, 3),
		dir("run/", 0o755, 0, 0),
		fifo("run/pipe"),
	)
	img := buildImage(t, "amd64", v1.Config{Env: []string{"PATH=/usr/bin"}, Cmd: []string{"/bin/sh"}, WorkingDir: "/home/user", User: "1000"},
		layerOf(t, l1, compression.GZip), layerOf(t, l2, compression.GZip), layerOf(t, l3, compression.ZStd))
	ref := reg.push(t, "test/app:1", img)
	want, _ := img.Digest()

	dest := filepath.Join(out, "rootfs.ext4")
	rec := &recorder{}
	res, err := Import(context.Background(), ref, dest, Options{
		Insecure: true,
		Extra: func(root string) error {
			if err := os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(root, "usr/local/bin/banger-vsock-agent"), []byte("agent"), 0o755)
		},
	}, rec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want.String() || res.Layers != 3 || res.Rootfs != dest || res.Platform != "linux/amd64" {
		t.Fatalf("result = %+v, want digest %s, 3 layers", res, want)
	}
	if res.Config.WorkingDir != "/home/user" || res.Config.User != "1000" || !slices.Equal(res.Config.Cmd, []string{"/bin/sh"}) || !slices.Equal(res.Config.Env, []string{"PATH=/usr/bin"}) {
		t.Fatalf("config = %+v", res.Config)
	}
	if st, err := os.Stat(dest); err != nil || st.Size() != res.Size {
		t.Fatalf("dest %s: %v, size %v want %d", dest, err, st, res.Size)
	}
	if got := listDir(t, out); !slices.Equal(got, []string{"rootfs.ext4"}) {
		t.Fatalf("destination dir holds %v, want only the image (work files removed)", got)
	}
	if !slices.Equal(rec.phases, []string{"resolve", "pull", "extra", "mkfs"}) || rec.total == 0 || rec.done != rec.total {
		t.Fatalf("progress: phases %v, %d of %d bytes", rec.phases, rec.done, rec.total)
	}
	fsck(t, dest)

	for _, gone := range []string{"/etc/gone", "/opt/old/a", "/opt/old/sub", "/etc/.wh.gone", "/opt/old/.wh..wh..opq"} {
		if stat(t, dest, gone).exists {
			t.Errorf("%s exists; whiteout/opaque should have removed it", gone)
		}
	}
	if got := catFile(t, dest, "/etc/keep"); got != "new\n" {
		t.Errorf("/etc/keep = %q, want the upper layer's content", got)
	}
	if got := catFile(t, dest, "/opt/old/new"); got != "new\n" {
		t.Errorf("/opt/old/new = %q", got)
	}
	if got := catFile(t, dest, "/usr/local/bin/banger-vsock-agent"); got != "agent" {
		t.Errorf("file added by Extra = %q", got)
	}
	checks := []struct{ path, typ, mode string }{
		{"/etc/keep", "regular", "0600"},
		{"/bin/tool", "regular", "04755"},
		{"/tmp", "directory", "01777"},
		{"/home/user", "directory", "0750"},
		{"/home/user/notes", "regular", "0640"},
		{"/usr/bin/sh", "symlink", "0777"},
	}
	for _, c := range checks {
		st := stat(t, dest, c.path)
		if st.typ != c.typ || st.mode != c.mode {
			t.Errorf("%s: type %q mode %q, want %q %q\n%s", c.path, st.typ, st.mode, c.typ, c.mode, st.raw)
		}
	}
	if st := stat(t, dest, "/usr/bin/sh"); !strings.Contains(st.raw, `Fast link dest: "busybox"`) {
		t.Errorf("/usr/bin/sh target wrong:\n%s", st.raw)
	}
	if st := stat(t, dest, "/lib"); !strings.Contains(st.raw, `Fast link dest: "usr/lib"`) {
		t.Errorf("/lib target wrong:\n%s", st.raw)
	}
	tool, tool2 := stat(t, dest, "/bin/tool"), stat(t, dest, "/bin/tool2")
	if tool.inode != tool2.inode || tool.links != "2" {
		t.Errorf("hardlink: /bin/tool inode %s links %s, /bin/tool2 inode %s", tool.inode, tool.links, tool2.inode)
	}
	if st := stat(t, dest, "/usr/bin/busybox"); st.mtime != hexTime(testTime) {
		t.Errorf("/usr/bin/busybox mtime 0x%s, want 0x%s", st.mtime, hexTime(testTime))
	}
	if st := stat(t, dest, "/run/pipe"); st.typ != "FIFO" || st.mode != "0620" {
		t.Errorf("/run/pipe: %q %q\n%s", st.typ, st.mode, st.raw)
	}

	// Kept with or without root: see TestRootlessImportMatchesRoot.
	t.Run("ownership", func(t *testing.T) {
		if st := stat(t, dest, "/home/user"); st.uid != "1000" || st.gid != "1000" {
			t.Errorf("/home/user owner %s:%s, want 1000:1000", st.uid, st.gid)
		}
		if st := stat(t, dest, "/home/user/notes"); st.uid != "1000" || st.gid != "1001" {
			t.Errorf("/home/user/notes owner %s:%s, want 1000:1001", st.uid, st.gid)
		}
		if st := stat(t, dest, "/"); st.uid != "0" || st.gid != "0" {
			t.Errorf("/ owner %s:%s, want 0:0", st.uid, st.gid)
		}
	})
	t.Run("device node", func(t *testing.T) {
		st := stat(t, dest, "/dev/null")
		if st.typ != "character special" || !strings.Contains(st.raw, "01:03") {
			t.Errorf("/dev/null: type %q\n%s", st.typ, st.raw)
		}
	})
	t.Run("xattr", func(t *testing.T) {
		if !xattrs {
			t.Skip("the temporary filesystem does not support user.* xattrs")
		}
		if got := debugfs(t, dest, "ea_get /etc/keep user.note"); !strings.Contains(got, "kept") {
			t.Errorf("xattr user.note on /etc/keep: %q", got)
		}
	})
}

func TestImportSelectsPlatformFromIndex(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	reg := startRegistry(t)
	mk := func(arch string) v1.Image {
		return buildImage(t, arch, v1.Config{}, layerOf(t, mkTar(t, file("arch", arch, 0o644, 0, 0)), compression.GZip))
	}
	amd, arm := mk("amd64"), mk("arm64")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.pushIndex(t, "test/multi:latest", idx)
	out := t.TempDir()

	for _, tc := range []struct {
		platform string
		img      v1.Image
		arch     string
	}{{"", amd, "amd64"}, {"linux/arm64", arm, "arm64"}} {
		dest := filepath.Join(out, "img-"+tc.arch)
		res, err := Import(context.Background(), ref, dest, Options{Insecure: true, Platform: tc.platform}, nil)
		if err != nil {
			t.Fatalf("platform %q: %v", tc.platform, err)
		}
		want, _ := tc.img.Digest()
		if res.Digest != want.String() {
			t.Errorf("platform %q: digest %s, want %s", tc.platform, res.Digest, want)
		}
		if got := catFile(t, dest, "/arch"); got != tc.arch {
			t.Errorf("platform %q: /arch = %q, want %q", tc.platform, got, tc.arch)
		}
		d, err := Digest(context.Background(), ref, Options{Insecure: true, Platform: tc.platform})
		if err != nil || d != res.Digest {
			t.Errorf("Digest(platform %q) = %s, %v; want %s", tc.platform, d, err, res.Digest)
		}
		fsck(t, dest)
	}

	_, err := Import(context.Background(), ref, filepath.Join(out, "s390x"), Options{Insecure: true, Platform: "linux/s390x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("missing platform: err = %v, want one naming linux/s390x", err)
	}
	if _, err := os.Stat(filepath.Join(out, "s390x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed import left %s behind", filepath.Join(out, "s390x"))
	}
}

func TestDigestFetchesNoLayers(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	img := buildImage(t, "amd64", v1.Config{}, layerOf(t, mkTar(t, file("a", "a", 0o644, 0, 0)), compression.GZip))
	ref := reg.push(t, "test/digest:1", img)
	want, _ := img.Digest()

	reg.blobGets.Store(0)
	d, err := Digest(context.Background(), ref, Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if d != want.String() {
		t.Fatalf("Digest = %s, want %s", d, want)
	}
	if n := reg.blobGets.Load(); n != 0 {
		t.Fatalf("Digest downloaded %d blobs, want none", n)
	}
	res, err := Import(context.Background(), ref, filepath.Join(t.TempDir(), "img"), Options{Insecure: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.blobGets.Load() == 0 || res.Digest != d {
		t.Fatalf("Import: %d blob downloads, digest %s; want downloads and digest %s", reg.blobGets.Load(), res.Digest, d)
	}

	if _, err := Digest(context.Background(), reg.host+"/test/missing:1", Options{Insecure: true}); err == nil {
		t.Fatal("Digest of a missing repository succeeded")
	}
	if _, err := Digest(context.Background(), "Not A Ref!", Options{}); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Fatalf("bad reference: err = %v", err)
	}
}

func TestImportCancelledMidwayLeavesNothing(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	var layers []v1.Layer
	for i := range 3 {
		layers = append(layers, layerOf(t, mkTar(t, file(fmt.Sprintf("f%d", i), strings.Repeat("x", 1<<16), 0o644, 0, 0)), compression.GZip))
	}
	img := buildImage(t, "amd64", v1.Config{}, layers...)
	ref := reg.push(t, "test/cancel:1", img)
	stall, _ := layers[2].Digest()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, stall.String()) {
			return false
		}
		cancel() // the import is now midway: earlier layers are being applied
		<-r.Context().Done()
		return true
	})
	out := t.TempDir()
	dest := filepath.Join(out, "img")
	if err := os.WriteFile(dest, []byte("previous image"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Import(ctx, ref, dest, Options{Insecure: true}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := listDir(t, out); !slices.Equal(got, []string{"img"}) {
		t.Fatalf("cancelled import left %v", got)
	}
	if b, _ := os.ReadFile(dest); string(b) != "previous image" {
		t.Fatalf("existing destination changed to %q", b)
	}
}

func TestImportRefusesEscapeAndChangesNothing(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	outside := t.TempDir()
	l1 := layerOf(t, mkTar(t, symlink("etc", outside)), compression.GZip)
	l2 := layerOf(t, mkTar(t, file("etc/passwd", "pwned", 0o644, 0, 0)), compression.GZip)
	img := buildImage(t, "amd64", v1.Config{}, l1, l2)
	ref := reg.push(t, "test/evil:1", img)
	d2, _ := l2.Digest()

	out := t.TempDir()
	dest := filepath.Join(out, "img")
	if err := os.WriteFile(dest, []byte("previous image"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Import(context.Background(), ref, dest, Options{Insecure: true}, nil)
	if err == nil {
		t.Fatal("import of a layer writing through a symlink succeeded")
	}
	for _, want := range []string{d2.String(), `"etc/passwd"`, "symlink"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if got := listDir(t, outside); len(got) != 0 {
		t.Fatalf("outside directory got %v", got)
	}
	if got := listDir(t, out); !slices.Equal(got, []string{"img"}) {
		t.Fatalf("failed import left %v", got)
	}
	if b, _ := os.ReadFile(dest); string(b) != "previous image" {
		t.Fatalf("existing destination changed to %q", b)
	}
}

func TestImportRefusesImageOverEntryLimit(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	var ents []ent
	for i := 0; i < 1200; i++ {
		ents = append(ents, file(fmt.Sprintf("f%d", i), "", 0o644, 0, 0))
	}
	ref := reg.push(t, "test/many:1", buildImage(t, "amd64", v1.Config{}, layerOf(t, mkTar(t, ents...), compression.GZip)))
	out := t.TempDir()
	_, err := Import(context.Background(), ref, filepath.Join(out, "img"), Options{Insecure: true, Limits: Limits{MaxEntries: 1000}}, nil)
	if err == nil {
		t.Fatal("an image over the entry limit was imported")
	}
	for _, want := range []string{ref, "more than 1000 entries", "oci_max_entries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if got := listDir(t, out); len(got) != 0 {
		t.Fatalf("refused import left %v", got)
	}
}

func TestImportExtraErrorAborts(t *testing.T) {
	needTools(t, "mkfs.ext4")
	reg := startRegistry(t)
	img := buildImage(t, "amd64", v1.Config{}, layerOf(t, mkTar(t, file("a", "a", 0o644, 0, 0)), compression.GZip))
	ref := reg.push(t, "test/extra:1", img)
	out := t.TempDir()
	boom := errors.New("no agent binary")
	_, err := Import(context.Background(), ref, filepath.Join(out, "img"), Options{Insecure: true, Extra: func(string) error { return boom }}, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the Extra error", err)
	}
	if got := listDir(t, out); len(got) != 0 {
		t.Fatalf("failed import left %v", got)
	}
}

func TestImportBadInput(t *testing.T) {
	out := t.TempDir()
	cases := []struct {
		name string
		ref  string
		dest string
		opts Options
		want string
	}{
		{"empty ref", "", filepath.Join(out, "x"), Options{}, "empty image reference"},
		{"no dest dir", "127.0.0.1:1/a:b", filepath.Join(out, "nope", "x"), Options{}, "does not exist"},
		{"dest is dir", "127.0.0.1:1/a:b", out, Options{}, "is a directory"},
		{"bad platform", "127.0.0.1:1/a:b", filepath.Join(out, "x"), Options{Platform: "amd64"}, "invalid platform"},
		{"negative headroom", "127.0.0.1:1/a:b", filepath.Join(out, "x"), Options{Headroom: -1}, "negative"},
		{"missing mkfs", "127.0.0.1:1/a:b", filepath.Join(out, "x"), Options{MkfsPath: "/nonexistent/mkfs.ext4"}, "install e2fsprogs"},
	}
	for _, c := range cases {
		_, err := Import(context.Background(), c.ref, c.dest, c.opts, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
	if got := listDir(t, out); len(got) != 0 {
		t.Fatalf("bad input left %v", got)
	}
}

func TestImageSizeRules(t *testing.T) {
	u := treeUsage{bytes: 100 * mib, inodes: 1000}
	def := imageSize(u, Options{})
	if def < u.bytes+DefaultMinHeadroom || def%mib != 0 {
		t.Fatalf("default size %d: want ≥ content+%d and MiB-aligned", def, DefaultMinHeadroom)
	}
	big := treeUsage{bytes: 10 << 30, inodes: 1000}
	if s := imageSize(big, Options{}); s < big.bytes+big.bytes/5 {
		t.Fatalf("size %d for 10 GiB content: want at least 20%% headroom", s)
	}
	if s := imageSize(u, Options{Headroom: mib}); s >= def {
		t.Fatalf("explicit small headroom gave %d, not less than default %d", s, def)
	}
	if s := imageSize(u, Options{MinSize: 4 << 30}); s != 4<<30 {
		t.Fatalf("MinSize 4 GiB gave %d", s)
	}
}

// BenchmarkImport imports a generated 4-layer image of about 64 MiB from the
// in-process registry.
func BenchmarkImport(b *testing.B) {
	needTools(b, "mkfs.ext4")
	reg := startRegistry(b)
	rng := rand.New(rand.NewPCG(1, 2))
	const perLayer = 16 << 20
	const fileSize = 64 << 10
	var layers []v1.Layer
	for l := range 4 {
		var ents []ent
		ents = append(ents, dir(fmt.Sprintf("l%d/", l), 0o755, 0, 0))
		for i := range perLayer / fileSize {
			body := make([]byte, fileSize)
			if i%2 == 0 {
				for j := range body {
					body[j] = byte(rng.Uint32())
				}
			} else {
				for j := range body {
					body[j] = "banger microvm layer text\n"[j%26]
				}
			}
			ents = append(ents, file(fmt.Sprintf("l%d/f%04d", l, i), string(body), 0o644, 0, 0))
		}
		layers = append(layers, layerOf(b, mkTar(b, ents...), compression.GZip))
	}
	ref := reg.push(b, "bench/img:1", buildImage(b, "amd64", v1.Config{}, layers...))
	out := b.TempDir()
	b.SetBytes(4 * perLayer)
	for b.Loop() {
		dest := filepath.Join(out, "img")
		if _, err := Import(context.Background(), ref, dest, Options{Insecure: true}, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = os.Remove(dest)
		b.StartTimer()
	}
}
