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

// name is the snapshot the sequential checks make and remove.
const name = "banger-test"

// tester holds what the checks share: the origin with its contents and
// checksum, the COW file, and what the snapshot reads after the write.
type tester struct {
	ctx    context.Context
	m      *dmsnap.Manager
	origin string
	cow    string
	want   []byte   // the origin's contents
	sum0   [32]byte // the origin's checksum, which must never change
	expect []byte   // the snapshot's contents after checkWrite
}

// run runs every check in order, each on what the one before left.
func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t, err := setup(ctx)
	if err != nil {
		return err
	}
	for _, check := range []func() error{
		t.checkBadInput, t.checkFailedCreate, t.checkWrite,
		t.checkPersistentCOW, t.checkParallel,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// setup checks that device-mapper is available and writes the origin.
func setup(ctx context.Context) (*tester, error) {
	if err := dmsnap.Available(); err != nil {
		return nil, fmt.Errorf("dmsnap.Available: %v", err)
	}
	say("available")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	t := &tester{
		ctx:    ctx,
		m:      &dmsnap.Manager{LockDir: "/run/banger"},
		origin: filepath.Join(dir, "origin.img"),
		cow:    filepath.Join(dir, "vm.cow"),
		want:   pattern(originSize),
	}
	if err := os.WriteFile(t.origin, t.want, 0o644); err != nil {
		return nil, err
	}
	sum0, err := fileSum(t.origin)
	if err != nil {
		return nil, err
	}
	t.sum0 = sum0
	return t, nil
}

// originUnchanged checks the origin's checksum; what names the failure.
func (t *tester) originUnchanged(what string) error {
	if sum, err := fileSum(t.origin); err != nil || sum != t.sum0 {
		return fmt.Errorf("%s (%v)", what, err)
	}
	return nil
}

// checkBadInput checks that bad input changes nothing.
func (t *tester) checkBadInput() error {
	ctx, m, origin, cow := t.ctx, t.m, t.origin, t.cow
	if _, err := m.Create(ctx, "test", origin, cow, cowSize); err == nil {
		return errors.New("dmsnap.Create accepted a name without the banger- prefix")
	}
	if _, err := m.Create(ctx, name, filepath.Join(dir, "missing.img"), cow, cowSize); err == nil {
		return errors.New("dmsnap.Create accepted a missing origin")
	}
	if _, err := os.Stat(cow); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bad input left a COW file: %v", err)
	}
	return clean("bad input")
}

// checkFailedCreate checks that a failure after the loop devices are
// bound (a COW file too small to hold the snapshot header) undoes
// everything.
func (t *tester) checkFailedCreate() error {
	tiny := filepath.Join(dir, "tiny.cow")
	if err := os.WriteFile(tiny, make([]byte, 512), 0o600); err != nil {
		return err
	}
	if _, err := t.m.Create(t.ctx, name, t.origin, tiny, cowSize); err == nil {
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
	return nil
}

// checkWrite creates the snapshot, checks what it is made of, writes
// through it and reads back, then checks Remove (refused while busy).
func (t *tester) checkWrite() error {
	s, err := t.m.Create(t.ctx, name, t.origin, t.cow, cowSize)
	if err != nil {
		return fmt.Errorf("dmsnap.Create: %v", err)
	}
	say("created %+v", s)
	if err := t.checkMade(s); err != nil {
		return err
	}
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, t.want) {
		return fmt.Errorf("the fresh snapshot does not read as the origin (%v)", err)
	}
	if err := t.writeThrough(s); err != nil {
		return err
	}
	return t.checkRemove(s)
}

// checkMade checks the snapshot's node, size, loop devices and its entry
// in List.
func (t *tester) checkMade(s dmsnap.Snapshot) error {
	origin, cow := t.origin, t.cow
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
	return nil
}

// writeThrough writes through the snapshot and checks that it reads back,
// that the origin is untouched and that the COW file grew; it sets
// t.expect.
func (t *tester) writeThrough(s dmsnap.Snapshot) error {
	cow0 := allocated(t.cow)
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
	t.expect = append([]byte(nil), t.want...)
	copy(t.expect[writeAt:], data)
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, t.expect) {
		return fmt.Errorf("the snapshot does not read back what was written (%v)", err)
	}
	if err := t.originUnchanged("the origin changed under the snapshot"); err != nil {
		return err
	}
	cow1 := allocated(t.cow)
	say("COW file allocated %d -> %d bytes", cow0, cow1)
	if cow1-cow0 < writeLen {
		return fmt.Errorf("COW file grew from %d to %d bytes, want at least %d more", cow0, cow1, writeLen)
	}
	return nil
}

// checkRemove checks that Remove refuses while the device is open, and
// says so; that it then removes everything; and that a second Remove is
// no error.
func (t *tester) checkRemove(s dmsnap.Snapshot) error {
	ctx, m := t.ctx, t.m
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
	return t.originUnchanged("the origin changed")
}

// checkPersistentCOW checks that the COW store is persistent: the same
// COW file brings the write back. It also checks that Create refuses an
// existing name without making a COW file.
func (t *tester) checkPersistentCOW() error {
	ctx, m := t.ctx, t.m
	s, err := m.Create(ctx, name, t.origin, t.cow, cowSize)
	if err != nil {
		return fmt.Errorf("dmsnap.Create again with the used COW file: %v", err)
	}
	if got, err := readAt(s.Device, 0, originSize); err != nil || !bytes.Equal(got, t.expect) {
		return fmt.Errorf("the re-created snapshot lost the write (%v)", err)
	}
	if _, err := m.Create(ctx, name, t.origin, filepath.Join(dir, "other.cow"), cowSize); err == nil || !strings.Contains(err.Error(), "already exists") {
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
	return nil
}

// parallelN is how many snapshots checkParallel makes at once.
const parallelN = 6

// checkParallel checks that parallel creates and removes serialise on the
// lock, each snapshot on loop devices of its own.
func (t *tester) checkParallel() error {
	snaps, err := t.createParallel()
	if err != nil {
		return err
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
	if len(loops) != 2*parallelN {
		return fmt.Errorf("parallel snapshots share loop devices: %+v", snaps)
	}
	for i, s := range snaps {
		b, err := readAt(s.Device, 0, 2)
		if err != nil || b[0] != byte(i+1) || b[1] != t.want[1] {
			return fmt.Errorf("snapshot %s reads %v (%v), want its own write", s.Name, b, err)
		}
	}
	if l, err := dmsnap.List(); err != nil || len(l) != parallelN {
		return fmt.Errorf("dmsnap.List after parallel Create: %d, %v; want %d", len(l), err, parallelN)
	}
	if err := t.removeParallel(snaps); err != nil {
		return err
	}
	if err := t.originUnchanged("the origin changed"); err != nil {
		return err
	}
	say("parallel ok")
	return nil
}

// createParallel creates parallelN snapshots of the origin at once.
func (t *tester) createParallel() ([]dmsnap.Snapshot, error) {
	var wg sync.WaitGroup
	errs := make([]error, parallelN)
	snaps := make([]dmsnap.Snapshot, parallelN)
	for i := range parallelN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snaps[i], errs[i] = t.m.Create(t.ctx, fmt.Sprintf("banger-p%d", i), t.origin, filepath.Join(dir, fmt.Sprintf("p%d.cow", i)), cowSize)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("parallel Create: %v", err)
	}
	return snaps, nil
}

// removeParallel removes snaps at once and checks that nothing is left.
func (t *tester) removeParallel(snaps []dmsnap.Snapshot) error {
	var wg sync.WaitGroup
	errs := make([]error, len(snaps))
	for i := range snaps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = t.m.Remove(t.ctx, snaps[i].Name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("parallel Remove: %v", err)
	}
	return clean("parallel remove")
}
