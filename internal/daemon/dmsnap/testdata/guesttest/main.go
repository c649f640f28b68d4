// Command guesttest is /sbin/init of the root disk in dmsnap's QEMU test.
// Inside a Debian kernel that has device-mapper it makes, uses, re-opens
// and removes real snapshots with package dmsnap, reports
// "DMSNAP-TEST: PASS" or "DMSNAP-TEST: FAIL <why>" on the console, and
// powers the guest off.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
)

const (
	dir        = "/dmsnap-test"
	originSize = 16 << 20
	cowSize    = 64 << 20
	writeAt    = 4 << 20
	writeLen   = 1 << 20
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "DMSNAP-TEST: "+format+"\n", args...)
}

func main() {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			say("FAIL mount %s: %v", m.dst, err)
			off()
		}
	}
	if err := run(); err != nil {
		say("FAIL %v", err)
	} else {
		say("PASS")
	}
	off()
}

func off() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

func fileSum(p string) ([32]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

func allocated(p string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return -1
	}
	return st.Blocks * 512
}

// boundLoops maps /dev/loopN to backing file for every bound loop device.
func boundLoops() map[string]string {
	out := map[string]string{}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			out["/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f)))] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// clean checks that no snapshot and no loop device is left.
func clean(step string) error {
	l, err := dmsnap.List()
	if err != nil {
		return fmt.Errorf("%s: List: %v", step, err)
	}
	if len(l) != 0 {
		return fmt.Errorf("%s: snapshots left: %+v", step, l)
	}
	if b := boundLoops(); len(b) != 0 {
		return fmt.Errorf("%s: loop devices left: %v", step, b)
	}
	if m, _ := filepath.Glob("/dev/mapper/banger-*"); len(m) != 0 {
		return fmt.Errorf("%s: nodes left: %v", step, m)
	}
	return nil
}

func readAt(dev string, off int64, n int) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	return b, err
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := dmsnap.Available(); err != nil {
		return fmt.Errorf("dmsnap.Available: %v", err)
	}
	say("available")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	origin := filepath.Join(dir, "origin.img")
	want := pattern(originSize)
	if err := os.WriteFile(origin, want, 0o644); err != nil {
		return err
	}
	sum0, err := fileSum(origin)
	if err != nil {
		return err
	}
	m := &dmsnap.Manager{LockDir: "/run/banger"}
	cow := filepath.Join(dir, "vm.cow")
	const name = "banger-test"

	// Bad input changes nothing.
	if _, err := m.Create(ctx, "test", origin, cow, cowSize); err == nil {
		return errors.New("dmsnap.Create accepted a name without the banger- prefix")
	}
	if _, err := m.Create(ctx, name, filepath.Join(dir, "missing.img"), cow, cowSize); err == nil {
		return errors.New("dmsnap.Create accepted a missing origin")
	}
	if _, err := os.Stat(cow); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bad input left a COW file: %v", err)
	}
	if err := clean("bad input"); err != nil {
		return err
	}

	// A failure after the loop devices are bound (a COW file too small to
	// hold the snapshot header) undoes everything.
	tiny := filepath.Join(dir, "tiny.cow")
	if err := os.WriteFile(tiny, make([]byte, 512), 0o600); err != nil {
		return err
	}
	if _, err := m.Create(ctx, name, origin, tiny, cowSize); err == nil {
		return errors.New("dmsnap.Create accepted a 512-byte COW file")
	} else {
		say("tiny COW refused: %v", err)
	}
	if err := clean("failed create"); err != nil {
		return err
	}
	if st, err := os.Stat(tiny); err != nil || st.Size() != 512 {
		return fmt.Errorf("failed create changed the existing COW file: %v", err)
	}

	// Create, write through the snapshot, read back.
	s, err := m.Create(ctx, name, origin, cow, cowSize)
	if err != nil {
		return fmt.Errorf("dmsnap.Create: %v", err)
	}
	say("created %+v", s)
	var st unix.Stat_t
	if err := unix.Stat("/dev/mapper/"+name, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("/dev/mapper/%s is not a block device: %v", name, err)
	}
	if s.Device != "/dev/mapper/"+name || s.Sectors != originSize/512 {
		return fmt.Errorf("snapshot %+v: want device /dev/mapper/%s of %d sectors", s, name, originSize/512)
	}
	if b := boundLoops(); b[s.OriginLoop] != origin || b[s.COWLoop] != cow {
		return fmt.Errorf("loops %v, want %s on %s and %s on %s", b, origin, s.OriginLoop, cow, s.COWLoop)
	}
	if ro, _ := os.ReadFile("/sys/block/" + filepath.Base(s.OriginLoop) + "/ro"); strings.TrimSpace(string(ro)) != "1" {
		return fmt.Errorf("origin loop %s is not read-only (ro=%q)", s.OriginLoop, ro)
	}
	l, err := dmsnap.List()
	if err != nil || len(l) != 1 || l[0].Name != name || l[0].OriginLoop != s.OriginLoop || l[0].COWLoop != s.COWLoop ||
		l[0].Origin != origin || l[0].COWFile != cow || l[0].Sectors != s.Sectors {
		return fmt.Errorf("dmsnap.List = %+v, %v; want the one snapshot %+v", l, err, s)
	}
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("the fresh snapshot does not read as the origin (%v)", err)
	}
	cow0 := allocated(cow)
	f, err := os.OpenFile(s.Device, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	data := bytes.Repeat([]byte{0xAB}, writeLen)
	if _, err := f.WriteAt(data, writeAt); err != nil {
		f.Close()
		return fmt.Errorf("write through %s: %v", s.Device, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %v", s.Device, err)
	}
	f.Close()
	expect := append([]byte(nil), want...)
	copy(expect[writeAt:], data)
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, expect) {
		return fmt.Errorf("the snapshot does not read back what was written (%v)", err)
	}
	if sum, err := fileSum(origin); err != nil || sum != sum0 {
		return fmt.Errorf("the origin changed under the snapshot (%v)", err)
	}
	cow1 := allocated(cow)
	say("COW file allocated %d -> %d bytes", cow0, cow1)
	if cow1-cow0 < writeLen {
		return fmt.Errorf("COW file grew from %d to %d bytes, want at least %d more", cow0, cow1, writeLen)
	}

	// Busy: Remove refuses while the device is open, and says so.
	busy, err := os.Open(s.Device)
	if err != nil {
		return err
	}
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	err = m.Remove(short, name)
	cancelShort()
	busy.Close()
	if err == nil || !strings.Contains(err.Error(), "in use") {
		return fmt.Errorf("dmsnap.Remove of an open snapshot: %v, want an in-use error", err)
	}
	say("busy remove refused: %v", err)

	if err := m.Remove(ctx, name); err != nil {
		return fmt.Errorf("dmsnap.Remove: %v", err)
	}
	if err := clean("remove"); err != nil {
		return err
	}
	if err := m.Remove(ctx, name); err != nil {
		return fmt.Errorf("second dmsnap.Remove: %v", err)
	}
	if sum, err := fileSum(origin); err != nil || sum != sum0 {
		return fmt.Errorf("the origin changed (%v)", err)
	}

	// The COW store is persistent: the same COW file brings the write back.
	s, err = m.Create(ctx, name, origin, cow, cowSize)
	if err != nil {
		return fmt.Errorf("dmsnap.Create again with the used COW file: %v", err)
	}
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, expect) {
		return fmt.Errorf("the re-created snapshot lost the write (%v)", err)
	}
	if _, err := m.Create(ctx, name, origin, filepath.Join(dir, "other.cow"), cowSize); err == nil || !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("dmsnap.Create of an existing name: %v, want already exists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.cow")); !errors.Is(err, os.ErrNotExist) {
		return errors.New("dmsnap.Create of an existing name made a COW file")
	}
	if err := m.Remove(ctx, name); err != nil {
		return fmt.Errorf("dmsnap.Remove: %v", err)
	}
	if err := clean("second remove"); err != nil {
		return err
	}
	say("persistent COW ok")

	// Parallel creates and removes serialise on the lock.
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	snaps := make([]dmsnap.Snapshot, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snaps[i], errs[i] = m.Create(ctx, fmt.Sprintf("banger-p%d", i), origin, filepath.Join(dir, fmt.Sprintf("p%d.cow", i)), cowSize)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("parallel Create: %v", err)
	}
	loops := map[string]bool{}
	for i, s := range snaps {
		f, err := os.OpenFile(s.Device, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt([]byte{byte(i + 1)}, 0)
		f.Close()
		if err != nil {
			return fmt.Errorf("write %s: %v", s.Device, err)
		}
		loops[s.OriginLoop], loops[s.COWLoop] = true, true
	}
	if len(loops) != 2*n {
		return fmt.Errorf("parallel snapshots share loop devices: %+v", snaps)
	}
	for i, s := range snaps {
		b, err := readAt(s.Device, 0, 2)
		if err != nil || b[0] != byte(i+1) || b[1] != want[1] {
			return fmt.Errorf("snapshot %s reads %v (%v), want its own write", s.Name, b, err)
		}
	}
	if l, err := dmsnap.List(); err != nil || len(l) != n {
		return fmt.Errorf("dmsnap.List after parallel Create: %d, %v; want %d", len(l), err, n)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Remove(ctx, snaps[i].Name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("parallel Remove: %v", err)
	}
	if err := clean("parallel remove"); err != nil {
		return err
	}
	if sum, err := fileSum(origin); err != nil || sum != sum0 {
		return fmt.Errorf("the origin changed (%v)", err)
	}
	say("parallel ok")
	return nil
}
