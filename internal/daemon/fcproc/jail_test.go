package fcproc

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestPlanJail(t *testing.T) {
	cfg := Config{Name: "vm-1", Binary: "/opt/fc/firecracker", Kernel: "/k/vmlinux", Initrd: "/k/initrd",
		Drives: []DriveConfig{{ID: "root", Path: "/s/root.ext4", Root: true}, {ID: "seed", Path: "/s/seed.ext4", ReadOnly: true}}}
	args, l, err := planJail(cfg, Jail{Binary: "/opt/fc/jailer", UID: 2046820352, GID: 2046820352, BaseDir: "/srv/bj"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--id", "vm-1", "--exec-file", "/opt/fc/firecracker", "--uid", "2046820352", "--gid", "2046820352",
		"--chroot-base-dir", "/srv/bj", "--", "--api-sock", "/run/fc.sock"}
	if !slices.Equal(args, want) {
		t.Errorf("argv\n got %q\nwant %q", args, want)
	}
	for _, a := range args {
		if strings.Contains(a, "seccomp") {
			t.Errorf("jailed argv %q touches the seccomp filters", args)
		}
	}
	if l.Root != "/srv/bj/firecracker/vm-1/root" || l.APISock != "/srv/bj/firecracker/vm-1/root/run/fc.sock" ||
		l.Vsock != "/srv/bj/firecracker/vm-1/root/run/vsock.sock" {
		t.Errorf("layout %+v", l)
	}
	if l.Kernel != "/vmlinux" || l.Initrd != "/initrd" || l.Drives["root"] != "/drives/root" || l.Drives["seed"] != "/drives/seed" {
		t.Errorf("paths inside the chroot: %+v", l)
	}
	if len(l.Files) != 4 || !l.Files[2].Owned || l.Files[3].Owned || l.Files[0].Owned {
		t.Errorf("files %+v: only the writable drive is handed over", l.Files)
	}
	for _, bad := range []Jail{
		{Binary: "/j", UID: 0, GID: 5, BaseDir: "/srv"},
		{Binary: "/j", UID: 5, GID: 5, BaseDir: "srv"},
		{Binary: "", UID: 5, GID: 5, BaseDir: "/srv"},
		{Binary: "/j", UID: 5, GID: 5, BaseDir: "/" + strings.Repeat("d", 90)},
	} {
		if _, _, err := planJail(cfg, bad); err == nil {
			t.Errorf("planJail accepted %+v", bad)
		}
	}
	cfg.Binary = "/opt/fc/fc"
	if _, _, err := planJail(cfg, Jail{Binary: "/j", UID: 5, GID: 5, BaseDir: "/srv"}); err == nil {
		t.Error("planJail accepted a binary the jailer refuses to exec")
	}
}

func TestPrepareJail(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another uid")
	}
	const uid = 0x7A00FFF1
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := Config{Name: "vm-2", Binary: "/usr/bin/firecracker",
		Kernel: write("vmlinux", 0o644), Initrd: write("initrd", 0o600),
		Drives: []DriveConfig{{ID: "root", Path: write("root.ext4", 0o600), Root: true}, {ID: "seed", Path: write("seed.ext4", 0o644), ReadOnly: true}}}
	_, l, err := planJail(cfg, Jail{Binary: "/usr/bin/jailer", UID: uid, GID: uid, BaseDir: filepath.Join(dir, "jail")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.prepare(uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := l.prepare(uid, uid); err != nil {
		t.Fatalf("a second prepare (a restart): %v", err)
	}
	stat := func(p string) *syscall.Stat_t {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	in := func(p string) string { return filepath.Join(l.Root, p) }
	// The readable kernel and the read-only drive are links, root's.
	if stat(in(l.Kernel)).Ino != stat(cfg.Kernel).Ino || stat(in(l.Drives["seed"])).Uid != 0 {
		t.Error("the readable kernel or the read-only drive is not a link of root's")
	}
	// The unreadable initrd is a readable copy; the original is untouched.
	if st := stat(in(l.Initrd)); st.Ino == stat(cfg.Initrd).Ino || st.Mode&0o004 == 0 {
		t.Error("the unreadable initrd was not copied readable")
	}
	if stat(cfg.Initrd).Mode&0o777 != 0o600 {
		t.Error("the original initrd's mode changed")
	}
	// The writable root disk is the same file, now the jail's.
	if st := stat(in(l.Drives["root"])); st.Ino != stat(cfg.Drives[0].Path).Ino || st.Uid != uid || st.Gid != uid {
		t.Errorf("root disk in the jail: uid %d", st.Uid)
	}
	if st := stat(in("run")); st.Uid != uid {
		t.Errorf("run dir uid %d, want the jail's", st.Uid)
	}
}

// TestJailPathsTranslated checks what a jailed Start hands Firecracker (the
// paths inside the chroot) against what bangerd uses (host paths, reached
// through the run dir's links).
func TestJailPathsTranslated(t *testing.T) {
	run := t.TempDir()
	cfg := Config{Name: "vm-3", Binary: "/opt/fc/firecracker", Dir: run, Kernel: "/k/vmlinux",
		Drives: []DriveConfig{{ID: "root", Path: "/s/root.ext4", Root: true}}}
	_, l, err := planJail(cfg, Jail{Binary: "/opt/fc/jailer", UID: 7, GID: 7, BaseDir: "/srv/bj"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Log != "/firecracker.log" || l.Metrics != "/metrics.json" || l.Initrd != "" {
		t.Errorf("log %q, metrics %q, initrd %q inside the chroot", l.Log, l.Metrics, l.Initrd)
	}
	// The run dir's API socket link names the chroot; nothing else does.
	if _, ok := jailRootOf(run); ok {
		t.Error("a run dir with no link is taken for a jailed VM's")
	}
	if err := os.Symlink(l.APISock, APISocketPath(run)); err != nil {
		t.Fatal(err)
	}
	if root, ok := jailRootOf(run); !ok || root != l.Root {
		t.Errorf("jailRootOf = %q, %v; want %q", root, ok, l.Root)
	}
	for _, bad := range []string{"relative/root/run/fc.sock", "/srv/bj/x/run/fc.sock", "/srv/bj/root/run/other.sock"} {
		os.Remove(APISocketPath(run))
		os.Symlink(bad, APISocketPath(run))
		if root, ok := jailRootOf(run); ok {
			t.Errorf("link to %q taken for the chroot %q", bad, root)
		}
	}
	if err := JailFits(Config{Name: strings.Repeat("n", 64)}, Jail{Binary: "/j", UID: 7, GID: 7, BaseDir: "/var/lib/banger/jail"}); err == nil {
		t.Error("JailFits accepted socket paths longer than 107 bytes")
	}
	if err := JailFits(Config{Name: "short"}, Jail{Binary: "/j", UID: 7, GID: 7, BaseDir: "/var/lib/banger/jail"}); err != nil {
		t.Errorf("JailFits: %v", err)
	}
}

func TestTapOpenableBy(t *testing.T) {
	dev := t.TempDir()
	if tapOpenableBy(dev, 7, 7) {
		t.Error("a tap with no owner files is taken as openable")
	}
	os.WriteFile(filepath.Join(dev, "owner"), []byte("-1\n"), 0o644)
	os.WriteFile(filepath.Join(dev, "group"), []byte("-1\n"), 0o644)
	if tapOpenableBy(dev, 7, 7) {
		t.Error("a tap with no owner (only CAP_NET_ADMIN opens it) is taken as openable")
	}
	os.WriteFile(filepath.Join(dev, "group"), []byte("7\n"), 0o644)
	if !tapOpenableBy(dev, 7, 7) {
		t.Error("a tap of the jail's group is refused")
	}
	os.WriteFile(filepath.Join(dev, "group"), []byte("-1\n"), 0o644)
	os.WriteFile(filepath.Join(dev, "owner"), []byte("7\n"), 0o644)
	if !tapOpenableBy(dev, 7, 8) {
		t.Error("a tap of the jail's uid is refused")
	}
}

// TestRemoveJail removes the chroot and the run dir's links, hands the
// linked disks back, and leaves the disks and real files alone.
func TestRemoveJail(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another uid and back")
	}
	const uid = 0x7A00FFF3
	dir, run := t.TempDir(), t.TempDir()
	disk := filepath.Join(dir, "root.ext4")
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(disk, []byte("disk"), 0o600)
	os.WriteFile(kernel, []byte("k"), 0o644)
	cfg := Config{Name: "vm-4", Binary: "/usr/bin/firecracker", Dir: run, Kernel: kernel,
		Drives: []DriveConfig{{ID: "root", Path: disk, Root: true}}}
	j := Jail{Binary: "/usr/bin/jailer", UID: uid, GID: uid, BaseDir: filepath.Join(dir, "jail")}
	_, l, err := planJail(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	s := &starter{cfg: Config{Dir: run, Jail: &j}, jail: &l, log: slog.New(slog.DiscardHandler)}
	if _, err := s.jailCmd(nil); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if syscall.Stat(disk, &st); st.Uid != uid {
		t.Fatalf("disk uid %d in the jail, want %d", st.Uid, uid)
	}
	os.WriteFile(APISocketPath(run)+".keep", nil, 0o600) // not a link: stays
	if err := removeJail(run, filepath.Dir(l.Root)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(j.BaseDir, "firecracker")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the chroot's parents are left: %v", err)
	}
	for _, p := range []string{APISocketPath(run), VsockPath(run), LogPath(run), MetricsPath(run)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if syscall.Stat(disk, &st); st.Uid != 0 || st.Nlink != 1 {
		t.Errorf("disk: uid %d, %d links; want root's and 1", st.Uid, st.Nlink)
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Errorf("kernel: %v", err)
	}
	if _, err := os.Stat(APISocketPath(run) + ".keep"); err != nil {
		t.Errorf("a plain file in the run dir was removed: %v", err)
	}
	if err := removeJail(run, filepath.Dir(l.Root)); err != nil {
		t.Errorf("a second removeJail: %v", err)
	}
}

// TestSweepJails removes a chroot no process runs in (its run dir's link
// went with a host reboot) and hands its disk back.
func TestSweepJails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another uid and back")
	}
	const uid = 0x7A00FFF4
	dir := t.TempDir()
	disk := filepath.Join(dir, "root.ext4")
	os.WriteFile(disk, []byte("disk"), 0o600)
	os.WriteFile(filepath.Join(dir, "vmlinux"), []byte("k"), 0o644)
	base := filepath.Join(dir, "jail")
	if got := SweepJails(base); len(got) != 0 {
		t.Errorf("SweepJails of a missing base dir: %v", got)
	}
	cfg := Config{Name: "vm-5", Binary: "/usr/bin/firecracker", Kernel: filepath.Join(dir, "vmlinux"),
		Drives: []DriveConfig{{ID: "root", Path: disk, Root: true}}}
	_, l, err := planJail(cfg, Jail{Binary: "/usr/bin/jailer", UID: uid, GID: uid, BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.prepare(uid, uid); err != nil {
		t.Fatal(err)
	}
	got := SweepJails(base)
	if !slices.Equal(got, []string{filepath.Dir(l.Root)}) {
		t.Errorf("SweepJails removed %v, want the idle chroot %s", got, filepath.Dir(l.Root))
	}
	var st syscall.Stat_t
	if syscall.Stat(disk, &st); st.Uid != 0 || st.Nlink != 1 {
		t.Errorf("disk: uid %d, %d links; want root's and 1", st.Uid, st.Nlink)
	}
}
