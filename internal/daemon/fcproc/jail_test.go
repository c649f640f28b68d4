package fcproc

import (
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
