package dmsnap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"banger-vm1":                         true,
		"banger-a.b_c+d-e":                   true,
		"banger-":                            false,
		"vm1":                                false,
		"Banger-vm":                          false,
		"banger-a/b":                         false,
		"banger-a b":                         false,
		"banger-" + strings.Repeat("x", 120): true,
		"banger-" + strings.Repeat("x", 121): false,
	} {
		if err := ValidName(name); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// The ioctl numbers and struct layout match linux/dm-ioctl.h.
func TestDMIoctlLayout(t *testing.T) {
	if got := dmIoctlNum(dmVersionCmd); got != 0xc138fd00 {
		t.Errorf("DM_VERSION = %#x, want 0xc138fd00", got)
	}
	if got := dmIoctlNum(dmTableLoadCmd); got != 0xc138fd09 {
		t.Errorf("DM_TABLE_LOAD = %#x, want 0xc138fd09", got)
	}
	// struct dm_ioctl as C lays it out.
	type cDMIoctl struct {
		Version     [3]uint32
		DataSize    uint32
		DataStart   uint32
		TargetCount uint32
		OpenCount   int32
		Flags       uint32
		EventNr     uint32
		Padding     uint32
		Dev         uint64
		Name        [dmNameLen]byte
		UUID        [dmUUIDLen]byte
		Data        [7]byte
	}
	var c cDMIoctl
	if unsafe.Sizeof(c) != dmHeaderSize || unsafe.Offsetof(c.Dev) != 40 || unsafe.Offsetof(c.Name) != 48 {
		t.Errorf("struct dm_ioctl layout: size %d, dev at %d, name at %d", unsafe.Sizeof(c), unsafe.Offsetof(c.Dev), unsafe.Offsetof(c.Name))
	}
	h := dmHeader{Version: [3]uint32{4, 48, 0}, DataSize: 1000, DataStart: 312, TargetCount: 2, OpenCount: -1, Flags: 9, EventNr: 7, Dev: 0xfd00, Name: "banger-x"}
	buf := make([]byte, dmHeaderSize)
	h.encode(buf)
	c = *(*cDMIoctl)(unsafe.Pointer(&buf[0]))
	if c.Version != h.Version || c.DataSize != 1000 || c.DataStart != 312 || c.TargetCount != 2 || c.OpenCount != -1 ||
		c.Flags != 9 || c.EventNr != 7 || c.Dev != 0xfd00 || cstring(c.Name[:]) != "banger-x" {
		t.Errorf("encoded header reads back in C layout as %+v", c)
	}
	if got := decodeHeader(buf); got != h {
		t.Errorf("decode(encode(h)) = %+v, want %+v", got, h)
	}
	// Names are cut to fit with their NUL.
	h.Name = strings.Repeat("n", 200)
	h.encode(buf)
	if got := decodeHeader(buf).Name; len(got) != dmNameLen-1 {
		t.Errorf("long name encoded as %d bytes", len(got))
	}
}

func TestTargetsRoundTrip(t *testing.T) {
	ts := []target{{Length: 2048, Type: "snapshot", Params: "7:0 7:1 P 8"}}
	got, err := parseTargets(encodeTargets(ts), 1)
	if err != nil || len(got) != 1 || got[0] != ts[0] {
		t.Fatalf("parseTargets(encodeTargets(%+v)) = %+v, %v", ts, got, err)
	}
	spec := encodeTargets(ts)
	if len(spec)%8 != 0 || string(spec[24:32]) != "snapshot" {
		t.Errorf("spec %q: want 8-aligned with the type at 24", spec)
	}
	// Two targets as the kernel replies: next counts from the first spec.
	a, b := encodeTargets(ts[:1]), encodeTargets([]target{{Start: 2048, Length: 8, Type: "linear", Params: "7:2 0"}})
	reply := append(append([]byte{}, a...), b...)
	ne.PutUint32(reply[len(a)+20:], 0)
	got, err = parseTargets(reply, 2)
	if err != nil || len(got) != 2 || got[1].Type != "linear" || got[1].Start != 2048 || got[1].Params != "7:2 0" {
		t.Errorf("two targets: %+v, %v", got, err)
	}
	if _, err := parseTargets(reply[:30], 1); err == nil {
		t.Error("truncated reply accepted")
	}
	if devs := snapshotDevices(got); len(devs) != 2 || devs[0] != [2]uint32{7, 0} || devs[1] != [2]uint32{7, 1} {
		t.Errorf("snapshotDevices = %v", devs)
	}
}

func nameListRecord(dev uint64, name string, last bool) []byte {
	n := (12 + len(name) + 1 + 7) &^ 7
	b := make([]byte, n)
	ne.PutUint64(b, dev)
	if !last {
		ne.PutUint32(b[8:], uint32(n))
	}
	copy(b[12:], name)
	return b
}

func TestParseNameList(t *testing.T) {
	data := append(nameListRecord(0xfd00, "banger-a", false), nameListRecord(0xfd01, "other", true)...)
	got := parseNameList(data)
	if len(got) != 2 || got[0] != (dmDevice{"banger-a", 0xfd00}) || got[1] != (dmDevice{"other", 0xfd01}) {
		t.Errorf("parseNameList = %+v", got)
	}
	if got := parseNameList(make([]byte, 16)); len(got) != 0 {
		t.Errorf("empty list parsed as %+v", got)
	}
}

func TestParseTargetVersions(t *testing.T) {
	rec := func(name string, last bool) []byte {
		n := (16 + len(name) + 1 + 7) &^ 7
		b := make([]byte, n)
		if !last {
			ne.PutUint32(b, uint32(n))
		}
		copy(b[16:], name)
		return b
	}
	got := parseTargetVersions(append(rec("linear", false), rec("snapshot", true)...))
	if strings.Join(got, ",") != "linear,snapshot" {
		t.Errorf("parseTargetVersions = %v", got)
	}
}

func FuzzParseReplies(f *testing.F) {
	f.Add(encodeTargets([]target{{Length: 8, Type: "snapshot", Params: "7:0 7:1 P 8"}}), uint8(1))
	f.Add(append(nameListRecord(1, "banger-a", false), nameListRecord(2, "b", true)...), uint8(2))
	f.Add([]byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, count uint8) {
		ts, _ := parseTargets(data, uint32(count))
		snapshotDevices(ts)
		parseNameList(data)
		parseTargetVersions(data)
	})
}

// withPaths points the package at fake control files for one test.
func withPaths(t *testing.T, control, misc, loopCtl string) {
	t.Helper()
	oc, om, ol := dmControlPath, procMisc, loopControl
	dmControlPath, procMisc, loopControl = control, misc, loopCtl
	t.Cleanup(func() { dmControlPath, procMisc, loopControl = oc, om, ol })
}

func TestAvailableExplains(t *testing.T) {
	dir := t.TempDir()
	loopCtl := filepath.Join(dir, "loop-control")
	os.WriteFile(loopCtl, nil, 0o600)
	noDM := filepath.Join(dir, "misc-nodm")
	os.WriteFile(noDM, []byte(" 58 loop-control\n237 loop-control\n"), 0o600)
	withDM := filepath.Join(dir, "misc-dm")
	os.WriteFile(withDM, []byte("236 device-mapper\n"), 0o600)
	control := filepath.Join(dir, "mapper", "control")
	badDir := filepath.Join(dir, "control-dir")
	os.Mkdir(badDir, 0o700)
	plain := filepath.Join(dir, "control-file")
	os.WriteFile(plain, nil, 0o600)

	for _, c := range []struct {
		control, misc, loopCtl string
		want                   []string
	}{
		{control, noDM, loopCtl, []string{"no device-mapper", control, "modprobe dm_mod"}},
		{control, withDM, loopCtl, []string{control, "dmsetup mknodes"}},
		{control, withDM, filepath.Join(dir, "missing"), []string{"no loop devices", "modprobe loop"}},
		// A control node that exists but cannot be opened (here a
		// directory; on a host, a node without its driver), or that
		// answers no device-mapper ioctl (a plain file): what to do.
		{badDir, noDM, loopCtl, []string{"device-mapper is not usable on this host", "open " + badDir, "modprobe dm_mod dm_snapshot", `cow = "copy"`}},
		{plain, withDM, loopCtl, []string{"device-mapper is not usable on this host", "version ioctl on " + plain, "modprobe dm_mod dm_snapshot", `cow = "copy"`}},
	} {
		withPaths(t, c.control, c.misc, c.loopCtl)
		err := Available()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Available() = %v, want ErrUnavailable", err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Available() = %q, lacks %q", err, w)
			}
		}
	}
}

// On this host (no device-mapper, ever) Available says so plainly.
func TestAvailableOnHostWithoutDeviceMapper(t *testing.T) {
	if _, err := os.Stat("/dev/mapper/control"); err == nil {
		t.Skip("this host has /dev/mapper/control")
	}
	if _, err := os.Stat(loopControl); err != nil {
		t.Skip("no loop devices either; Available reports those first")
	}
	err := Available()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "/dev/mapper/control") {
		t.Fatalf("Available() = %v; want ErrUnavailable naming /dev/mapper/control", err)
	}
	if !kernelHasDM() && !strings.Contains(err.Error(), "no device-mapper") {
		t.Errorf("Available() = %q; want it to say no device-mapper", err)
	}
}

// Create with bad input, or on a host without device-mapper, fails and
// leaves nothing behind: no COW file, no loop device.
func TestCreateFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	origin, _ := patternFile(t, dir, "origin.img", 1<<20)
	cow := filepath.Join(dir, "vm.cow")
	existing := filepath.Join(dir, "existing.cow")
	os.WriteFile(existing, []byte("keep"), 0o600)
	m := &Manager{LockDir: filepath.Join(dir, "lock")}
	ctx := context.Background()
	cases := []struct {
		name, origin, cow string
		size              int64
		want              string
	}{
		{"vm1", origin, cow, 1 << 30, "must start with"},
		{"banger-a/b", origin, cow, 1 << 30, "banger-a/b"},
		{"banger-vm", filepath.Join(dir, "missing.img"), cow, 1 << 30, "missing.img"},
		{"banger-vm", dir, cow, 1 << 30, "not a file"},
		{"banger-vm", origin, cow, 4096, "below the minimum"},
		{"banger-vm", origin, dir, 1 << 30, "not a regular file"},
	}
	if _, err := os.Stat(dmControlPath); err != nil {
		cases = append(cases,
			struct {
				name, origin, cow string
				size              int64
				want              string
			}{"banger-vm", origin, cow, 1 << 30, "device-mapper"},
			struct {
				name, origin, cow string
				size              int64
				want              string
			}{"banger-vm", origin, existing, 0, "device-mapper"})
	}
	for _, c := range cases {
		_, err := m.Create(ctx, c.name, c.origin, c.cow, c.size)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%q, %s, %s, %d) = %v, want an error with %q", c.name, c.origin, c.cow, c.size, err, c.want)
		}
		if _, err := os.Stat(cow); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create(%q, ...) left %s", c.name, cow)
		}
		if b, _ := os.ReadFile(existing); string(b) != "keep" {
			t.Errorf("Create changed the existing COW file")
		}
		if b := boundTo(origin); len(b) != 0 {
			t.Errorf("Create(%q, ...) left %s bound to %v", c.name, origin, b)
		}
	}
}

func TestRemoveAndListWithoutDeviceMapper(t *testing.T) {
	if _, err := os.Stat("/dev/mapper/control"); err == nil || kernelHasDM() {
		t.Skip("this host has device-mapper")
	}
	if err := (&Manager{}).Remove(context.Background(), "banger-none"); err != nil {
		t.Errorf("Remove without device-mapper: %v, want nil (nothing can exist)", err)
	}
	if l, err := List(); err != nil || len(l) != 0 {
		t.Errorf("List without device-mapper = %v, %v", l, err)
	}
	if err := (&Manager{}).Remove(context.Background(), "nope"); err == nil {
		t.Error("Remove of a name without the prefix succeeded")
	}
}

func TestMakeNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot mknod")
	}
	old := mapperDir
	mapperDir = filepath.Join(t.TempDir(), "mapper")
	t.Cleanup(func() { mapperDir = old })
	dev := unix.Mkdev(1, 3) // /dev/null's number: harmless
	node, made, err := makeNode("banger-n", dev)
	if err != nil || !made || node != filepath.Join(mapperDir, "banger-n") {
		t.Fatalf("makeNode = %s, %v, %v", node, made, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		t.Fatalf("node %s: %+v, %v", node, st, err)
	}
	if _, made, err := makeNode("banger-n", dev); err != nil || made {
		t.Errorf("second makeNode: made %v, %v; want it to keep the node", made, err)
	}
	removeNode(node, unix.Mkdev(1, 5))
	if _, err := os.Stat(node); err != nil {
		t.Error("removeNode removed another device's node")
	}
	removeNode(node, dev)
	if _, err := os.Stat(node); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removeNode left %s", node)
	}
}
