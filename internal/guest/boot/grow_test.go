package boot

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const mib = 1 << 20

// mkfsImage makes an ext4 image file of size bytes with extra mkfs.ext4
// arguments.
func mkfsImage(t *testing.T, size int64, args ...string) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mkfs, append(append([]string{"-q", "-F"}, args...), img)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// dumpe2fsSize asks dumpe2fs (an independent reader) for the filesystem's
// size, or skips when it is missing.
func dumpe2fsSize(t *testing.T, img string) int64 {
	t.Helper()
	tool, err := exec.LookPath("dumpe2fs")
	if err != nil {
		t.Skip("dumpe2fs (e2fsprogs) is not installed")
	}
	out, err := exec.Command(tool, "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs: %v", err)
	}
	field := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dumpe2fs output lacks %s:\n%s", name, out)
		}
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return n
	}
	return field("Block count") * field("Block size")
}

func ext4SizeOf(t *testing.T, img string) int64 {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := Ext4Size(f)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestExt4SizeMatchesDumpe2fs(t *testing.T) {
	cases := map[string][]string{
		"1k blocks":  {"-b", "1024"},
		"4k blocks":  {"-b", "4096"},
		"64bit":      {"-b", "4096", "-O", "64bit"},
		"no journal": {"-O", "^has_journal"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			img := mkfsImage(t, 24*mib, args...)
			got := ext4SizeOf(t, img)
			if want := dumpe2fsSize(t, img); got != want {
				t.Fatalf("Ext4Size = %d, dumpe2fs says %d", got, want)
			}
			if got != 24*mib {
				t.Fatalf("Ext4Size = %d, want the whole 24 MiB image", got)
			}
		})
	}
}

func TestExt4SizeRejectsNonExt(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "zero")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := Ext4Size(f); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("Ext4Size of zeros: %v, want a magic error", err)
	}
	short, _ := os.CreateTemp(t.TempDir(), "short")
	defer short.Close()
	if _, err := Ext4Size(short); err == nil {
		t.Fatal("Ext4Size of an empty file succeeded")
	}
}

func TestNeedsGrow(t *testing.T) {
	cases := []struct {
		dev, fs int64
		want    bool
	}{
		{32 * mib, 16 * mib, true},
		{16 * mib, 16 * mib, false},
		{16*mib + mib, 16 * mib, false},
		{16*mib + mib + 1, 16 * mib, true},
		{8 * mib, 16 * mib, false},
	}
	for _, c := range cases {
		if got := NeedsGrow(c.dev, c.fs); got != c.want {
			t.Errorf("NeedsGrow(%d, %d) = %v, want %v", c.dev, c.fs, got, c.want)
		}
	}
}

func TestApplyGrowsImageFile(t *testing.T) {
	if _, err := exec.LookPath("resize2fs"); err != nil {
		t.Skip("resize2fs (e2fsprogs) is not installed")
	}
	img := mkfsImage(t, 16*mib)
	if err := os.Truncate(img, 40*mib); err != nil {
		t.Fatal(err)
	}
	if fs := ext4SizeOf(t, img); !NeedsGrow(40*mib, fs) {
		t.Fatalf("a 16 MiB filesystem on a 40 MiB file should need growing (read %d)", fs)
	}
	env := testEnv(t)
	env.RootDevice = img
	rep, err := Apply(context.Background(), Settings{Grow: true}, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutyGrow); st.Status != StatusDone {
		t.Fatalf("grow step = %v", st)
	}
	if got := ext4SizeOf(t, img); got != 40*mib {
		t.Fatalf("filesystem is %d bytes after growing, want %d", got, 40*mib)
	}
	rep, err = Apply(context.Background(), Settings{Grow: true}, env)
	if err != nil {
		t.Fatal(err)
	}
	if st := stepOf(t, rep, DutyGrow); st.Status != StatusUnchanged {
		t.Fatalf("second apply: grow step = %v, want unchanged", st)
	}
}

// fakeSys builds a mountinfo file and a sysfs tree in which the root is
// mounted from block device 254:0, called vda, of devSize bytes, and puts
// img at <dev>/vda.
func fakeSys(t *testing.T, env *Env, fstype string, devSize int64, img string) {
	t.Helper()
	dir := t.TempDir()
	env.SysDir = filepath.Join(dir, "sys")
	env.DevDir = filepath.Join(dir, "dev")
	env.MountInfo = filepath.Join(dir, "mountinfo")
	for _, d := range []string{"sys/dev/block", "sys/devices/pci0000:00/virtio1/block/vda", "sys/class/block", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("../../devices/pci0000:00/virtio1/block/vda", filepath.Join(dir, "sys/dev/block/254:0")))
	must(os.Symlink("../../devices/pci0000:00/virtio1/block/vda", filepath.Join(dir, "sys/class/block/vda")))
	must(os.WriteFile(filepath.Join(dir, "sys/devices/pci0000:00/virtio1/block/vda/size"), []byte(strconv.FormatInt(devSize/512, 10)+"\n"), 0o644))
	if img != "" {
		must(os.Symlink(img, filepath.Join(env.DevDir, "vda")))
	}
	mountinfo := "" +
		"1 0 0:2 / / rw - rootfs rootfs rw\n" +
		"22 1 254:0 / / rw,relatime shared:1 - " + fstype + " /dev/root rw\n" +
		"23 22 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n" +
		`24 22 0:22 / /mnt/with\040blank rw - tmpfs tmpfs rw` + "\n"
	must(os.WriteFile(env.MountInfo, []byte(mountinfo), 0o644))
}

func TestFindRootDevice(t *testing.T) {
	env := testEnv(t)
	fakeSys(t, &env, "ext4", 2*1024*mib, "")
	rd, err := FindRootDevice(env.MountInfo, env.SysDir, env.DevDir)
	if err != nil {
		t.Fatal(err)
	}
	want := RootDevice{Path: filepath.Join(env.DevDir, "vda"), Name: "vda", FSType: "ext4", Size: 2 * 1024 * mib}
	if rd != want {
		t.Fatalf("FindRootDevice = %+v, want %+v", rd, want)
	}

	fakeSys(t, &env, "xfs", 2*1024*mib, "")
	if _, err := FindRootDevice(env.MountInfo, env.SysDir, env.DevDir); !errors.Is(err, ErrNotGrowable) || !strings.Contains(err.Error(), "xfs") {
		t.Fatalf("xfs root: err = %v, want ErrNotGrowable naming xfs", err)
	}
	if _, err := FindRootDevice(filepath.Join(t.TempDir(), "missing"), env.SysDir, env.DevDir); err == nil || errors.Is(err, ErrNotGrowable) {
		t.Fatalf("missing mountinfo: err = %v, want a real failure", err)
	}
}

func TestParseMountInfoLineUnescapes(t *testing.T) {
	mm, mp, ft, ok := parseMountInfoLine(`24 22 0:22 / /mnt/with\040blank rw shared:3 master:1 - tmpfs tmpfs rw`)
	if !ok || mm != "0:22" || mp != "/mnt/with blank" || ft != "tmpfs" {
		t.Fatalf("got %q %q %q %v", mm, mp, ft, ok)
	}
	if _, _, _, ok := parseMountInfoLine("1 2 3 4 5 6"); ok {
		t.Fatal("a short line parsed")
	}
}

func TestApplyGrowThroughMountinfoAndSysfs(t *testing.T) {
	if _, err := exec.LookPath("resize2fs"); err != nil {
		t.Skip("resize2fs (e2fsprogs) is not installed")
	}
	img := mkfsImage(t, 16*mib, "-b", "4096")
	if err := os.Truncate(img, 32*mib); err != nil {
		t.Fatal(err)
	}
	env := testEnv(t)
	fakeSys(t, &env, "ext4", 32*mib, img)
	rep, err := Apply(context.Background(), Settings{Grow: true}, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutyGrow); st.Status != StatusDone || !strings.Contains(st.Detail, "vda") {
		t.Fatalf("grow step = %v", st)
	}
	if got := ext4SizeOf(t, img); got != 32*mib {
		t.Fatalf("filesystem is %d bytes, want %d", got, 32*mib)
	}
}

func TestApplyGrowSkipsWithoutResizeTool(t *testing.T) {
	img := mkfsImage(t, 16*mib)
	if err := os.Truncate(img, 32*mib); err != nil {
		t.Fatal(err)
	}
	env := testEnv(t)
	env.RootDevice = img
	env.Resize = func(context.Context, string) error { return ErrNoResizeTool }
	rep, err := Apply(context.Background(), Settings{Grow: true}, env)
	if err != nil {
		t.Fatal(err)
	}
	if st := stepOf(t, rep, DutyGrow); st.Status != StatusSkipped || !strings.Contains(st.Detail, "resize2fs") {
		t.Fatalf("grow step = %v, want skipped naming resize2fs", st)
	}
	if got := ext4SizeOf(t, img); got != 16*mib {
		t.Fatalf("filesystem changed to %d bytes", got)
	}

	env.Resize = func(context.Context, string) error { return errors.New("boom") }
	if _, err := Apply(context.Background(), Settings{Grow: true}, env); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("a failing resize: err = %v", err)
	}
}

func FuzzExt4Superblock(f *testing.F) {
	sb := make([]byte, sbSize)
	binary.LittleEndian.PutUint16(sb[sbMagic:], extMagic)
	binary.LittleEndian.PutUint32(sb[sbBlocksLo:], 4096)
	binary.LittleEndian.PutUint32(sb[sbLogBlockSize:], 2)
	f.Add(sb)
	big := append([]byte(nil), sb...)
	binary.LittleEndian.PutUint32(big[sbFeatureIncompat:], incompat64Bit)
	binary.LittleEndian.PutUint32(big[sbBlocksHi:], 0xFFFFFFFF)
	binary.LittleEndian.PutUint32(big[sbLogBlockSize:], 6)
	f.Add(big)
	f.Add([]byte{0x53, 0xEF})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseSuperblock(data)
		if err == nil && n < 0 {
			t.Fatalf("negative size %d", n)
		}
		if err == nil && binary.LittleEndian.Uint16(data[sbMagic:]) != extMagic {
			t.Fatal("accepted a superblock without the ext magic")
		}
	})
}
