package initrd

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseCmdlineDefaults(t *testing.T) {
	c := ParseCmdline("console=ttyS0 quiet=0\n")
	if c.Root != DefaultRoot || !reflect.DeepEqual(c.FSTypes, []string{DefaultRootFSType}) || c.Init != DefaultInit ||
		!c.ReadOnly || c.RootWait != DefaultRootWait || c.Test || c.Quiet {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParseCmdline(t *testing.T) {
	c := ParseCmdline(`BOOT_IMAGE=/vmlinuz root=/dev/vdb rootfstype=xfs,ext4 rootflags=noatime ro rw init=/lib/systemd/systemd ` +
		`rootdelay=30 quiet banger.initrd_test=1 virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 ` +
		`foo.bar="a b" banger.ip=10.0.0.2 init=relative -- root=/dev/evil`)
	want := Config{Root: "/dev/vdb", FSTypes: []string{"xfs", "ext4"}, RootFlags: "noatime", ReadOnly: false,
		Init: "/lib/systemd/systemd", RootWait: 30 * time.Second, Quiet: true, Test: true,
		ModuleParams: map[string][]string{
			"virtio_mmio": {"device=4K@0xd0000000:5", "device=4K@0xd0001000:6"},
			"foo":         {`bar="a b"`},
			"banger":      {"ip=10.0.0.2"},
		}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if got := c.Params("virtio-mmio"); got != "device=4K@0xd0000000:5 device=4K@0xd0001000:6" {
		t.Fatalf("Params = %q", got)
	}
	if ParseCmdline("rw ro").ReadOnly != true || ParseCmdline("ro rw").ReadOnly != false {
		t.Fatal("the last of ro/rw must win")
	}
	if ParseCmdline("banger.initrd_test=0").Test || ParseCmdline("banger.initrd_test").Test {
		t.Fatal("test mode must need banger.initrd_test=1")
	}
	if c := ParseCmdline("root= rootfstype= rootdelay=1"); c.Root != DefaultRoot || c.FSTypes[0] != DefaultRootFSType || c.RootWait != DefaultRootWait {
		t.Fatalf("empty values must keep defaults, and rootdelay only raises the wait: %+v", c)
	}
}

func TestSplitCmdlineQuotes(t *testing.T) {
	got := SplitCmdline(` a  "b c"  d="e f" "" g`)
	want := []string{"a", "b c", "d=e f", "", "g"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseManifest(t *testing.T) {
	got := ParseManifest("# comment\n/lib/modules/banger/a.ko\n\n  /lib/modules/banger/b.ko  \r\n")
	if !reflect.DeepEqual(got, []string{"/lib/modules/banger/a.ko", "/lib/modules/banger/b.ko"}) {
		t.Fatalf("manifest %q", got)
	}
}

func TestRunRefusesWhenNotPID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("the test itself runs as PID 1")
	}
	err := Run()
	if err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Fatalf("Run outside PID 1: %v", err)
	}
}

func TestDeleteTreeStaysOnOneFilesystem(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a/b/c", "d", "mnt"} {
		os.MkdirAll(filepath.Join(dir, p), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "a/b/c/f"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "top"), []byte("x"), 0o644)
	os.Symlink("/etc", filepath.Join(dir, "d", "etc-link"))
	mounted := unix.Mount("tmpfs", filepath.Join(dir, "mnt"), "tmpfs", 0, "size=1m") == nil
	if mounted {
		defer unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH)
		os.WriteFile(filepath.Join(dir, "mnt", "keep"), []byte("x"), 0o644)
	} else {
		t.Log("cannot mount tmpfs (not root?); checking deletion without a mount point")
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	deleteTree(dir, st.Dev)
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if mounted {
		if !reflect.DeepEqual(left, []string{"mnt"}) {
			t.Fatalf("left %v, want only the mount point", left)
		}
		if _, err := os.Stat(filepath.Join(dir, "mnt", "keep")); err != nil {
			t.Fatal("deleteTree crossed into another filesystem")
		}
	} else if len(left) != 0 { // mnt is a plain directory then
		t.Fatalf("left %v, want nothing", left)
	}
	if _, err := os.Stat("/etc"); err != nil {
		t.Fatal("deleteTree followed a symlink")
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`root=/dev/vda rw "quoted arg" a.b=c init=/sbin/init -- x`)
	f.Add(`rootfstype=,,, rootdelay=99999999999 """`)
	f.Fuzz(func(t *testing.T, s string) {
		c := ParseCmdline(s)
		if c.Root == "" || len(c.FSTypes) == 0 || !strings.HasPrefix(c.Init, "/") || c.RootWait < DefaultRootWait || c.RootWait > time.Hour {
			t.Fatalf("bad config from %q: %+v", s, c)
		}
		for _, ft := range c.FSTypes {
			if ft == "" {
				t.Fatalf("empty fstype from %q", s)
			}
		}
	})
}
