package dmsnap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireLoop skips unless this process can bind loop devices.
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot bind loop devices")
	}
	if _, err := os.Stat(loopControl); err != nil {
		t.Skipf("no %s (loop module not loaded?): %v", loopControl, err)
	}
}

func patternFile(t *testing.T, dir, name string, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*13 + i>>9)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func sysLoop(n int, attr string) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/%s", n, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// boundTo lists the loop devices whose backing file is p.
func boundTo(p string) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.TrimSpace(string(b)) == p {
			out = append(out, f)
		}
	}
	return out
}

// waitUnbound waits (bounded) for nothing to be bound to p: autoclear runs
// when the last opener closes, and a udev on the host may hold the device
// for a moment.
func waitUnbound(t *testing.T, p string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if len(boundTo(p)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s is still bound to %v", p, boundTo(p))
}

func TestAttachLoopReadOnlyAndReadWrite(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	file, want := patternFile(t, dir, "disk.img", 1<<20)

	ro, err := attachLoop(file, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := sysLoop(ro.N, "ro"); got != "1" {
		t.Errorf("%s ro=%q, want 1", ro.Path, got)
	}
	if got := sysLoop(ro.N, "loop/backing_file"); got != file {
		t.Errorf("%s backing_file=%q, want %s", ro.Path, got, file)
	}
	if got := sysLoop(ro.N, "loop/autoclear"); got != "1" {
		t.Errorf("%s autoclear=%q, want 1", ro.Path, got)
	}
	if got, err := os.ReadFile(ro.Path); err != nil || !bytes.Equal(got, want) {
		t.Errorf("reading %s: %v (equal %v)", ro.Path, err, bytes.Equal(got, want))
	}
	if f, err := os.OpenFile(ro.Path, os.O_WRONLY, 0); err == nil {
		// Some kernels let a read-only disk be opened for writing; the
		// write itself must fail.
		_, werr := f.WriteAt(make([]byte, 512), 0)
		f.Close()
		if werr == nil {
			t.Errorf("a write to read-only %s succeeded", ro.Path)
		}
	}
	if n, err := ro.sectors(); err != nil || n != 1<<20/512 {
		t.Errorf("sectors = %d, %v; want %d", n, err, 1<<20/512)
	}

	rw, err := attachLoop(file, false)
	if err != nil {
		t.Fatal(err)
	}
	if rw.Path == ro.Path {
		t.Fatalf("both attachments got %s", rw.Path)
	}
	if got := sysLoop(rw.N, "ro"); got != "0" {
		t.Errorf("%s ro=%q, want 0", rw.Path, got)
	}
	f, err := os.OpenFile(rw.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, _ := os.ReadFile(file)
	if string(b[4096:4096+7]) != "written" {
		t.Errorf("a write through %s did not reach %s", rw.Path, file)
	}

	// What Remove sees of a bound device.
	li, err := loopByNumber(unix.Major(rw.Dev), unix.Minor(rw.Dev))
	if err != nil || li.Path != rw.Path || li.Backing != file || li.Inode == 0 {
		t.Errorf("loopByNumber = %+v, %v", li, err)
	}

	for _, l := range []*loopDev{ro, rw} {
		if err := l.detach(); err != nil {
			t.Error(err)
		}
	}
	waitUnbound(t, file)
	if _, err := loopByNumber(unix.Major(rw.Dev), unix.Minor(rw.Dev)); err == nil {
		t.Errorf("loopByNumber of detached %s succeeded", rw.Path)
	}
}

// The design relies on autoclear: once this process lets go, the device
// stays while another holder (the snapshot) has it and detaches when that
// holder closes.
func TestAutoclearDetachesWithLastHolder(t *testing.T) {
	requireLoop(t)
	file, _ := patternFile(t, t.TempDir(), "disk.img", 64<<10)
	l, err := attachLoop(file, true)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(l.Path)
	if err != nil {
		l.detach()
		t.Fatal(err)
	}
	l.release()
	if got := sysLoop(l.N, "loop/backing_file"); got != file {
		holder.Close()
		t.Fatalf("released %s while held: backing_file %q, want %s", l.Path, got, file)
	}
	holder.Close()
	waitUnbound(t, file)
}

// detachIfSame leaves alone a device that was rebound to another file.
func TestDetachIfSameLeavesReboundDevice(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	a, _ := patternFile(t, dir, "a.img", 64<<10)
	b, _ := patternFile(t, dir, "b.img", 64<<10)
	la, err := attachLoop(a, true)
	if err != nil {
		t.Fatal(err)
	}
	defer la.detach()
	info, err := loopByNumber(unix.Major(la.Dev), unix.Minor(la.Dev))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := attachLoop(b, true)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.detach()
	// b's device with a's identity: must stay.
	if err := detachIfSame(unix.Major(lb.Dev), unix.Minor(lb.Dev), info); err != nil {
		t.Fatal(err)
	}
	if len(boundTo(b)) != 1 {
		t.Fatalf("detachIfSame detached a device bound to another file")
	}
	// a's device with a's identity: goes (once our handle closes).
	if err := detachIfSame(unix.Major(la.Dev), unix.Minor(la.Dev), info); err != nil {
		t.Fatal(err)
	}
	la.release()
	waitUnbound(t, a)
}

func TestAttachLoopRefusesWhatItCannotBind(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, fifo, filepath.Join(dir, "missing")} {
		// Read-write: opening a FIFO read-only would block.
		if l, err := attachLoop(p, false); err == nil {
			l.detach()
			t.Errorf("attachLoop(%s) succeeded", p)
		} else if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name %s", err, p)
		}
		if b := boundTo(p); len(b) != 0 {
			t.Errorf("%s left bound to %v", p, b)
		}
	}
}

// Eight goroutines attach and detach at once; the lock lets one in at a
// time, every device they hold together is distinct and bound to the
// right file, and all are gone at the end.
func TestConcurrentAttachDetach(t *testing.T) {
	requireLoop(t)
	dir := t.TempDir()
	m := &Manager{LockDir: filepath.Join(dir, "lock")}
	const n = 8
	var inside atomic.Int32
	var overlap atomic.Bool
	locked := func(f func() error) error {
		unlock, err := m.lock(context.Background())
		if err != nil {
			return err
		}
		defer unlock()
		if inside.Add(1) != 1 {
			overlap.Store(true)
		}
		defer inside.Add(-1)
		return f()
	}
	var attached, wg sync.WaitGroup
	attached.Add(n)
	release := make(chan struct{})
	type pair struct {
		file   string
		ro, rw *loopDev
		err    error
	}
	pairs := make([]pair, n)
	for i := range n {
		pairs[i].file, _ = patternFile(t, dir, fmt.Sprintf("f%d.img", i), 64<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &pairs[i]
			p.err = locked(func() (err error) {
				if p.ro, err = attachLoop(p.file, true); err != nil {
					return err
				}
				p.rw, err = attachLoop(p.file, false)
				return err
			})
			attached.Done()
			<-release
			if p.err != nil {
				return
			}
			p.err = locked(func() error { return errors.Join(p.ro.detach(), p.rw.detach()) })
		}()
	}
	attached.Wait()
	seen := map[string]string{}
	for _, p := range pairs {
		if p.err != nil {
			t.Errorf("attach %s: %v", p.file, p.err)
			continue
		}
		for _, l := range []*loopDev{p.ro, p.rw} {
			if other, dup := seen[l.Path]; dup {
				t.Errorf("%s given to %s and %s", l.Path, other, p.file)
			}
			seen[l.Path] = p.file
			if got := sysLoop(l.N, "loop/backing_file"); got != p.file {
				t.Errorf("%s backing %q, want %s", l.Path, got, p.file)
			}
		}
	}
	close(release)
	wg.Wait()
	if overlap.Load() {
		t.Error("two goroutines were inside the lock at once")
	}
	for _, p := range pairs {
		if p.err != nil {
			t.Errorf("detach %s: %v", p.file, p.err)
		}
		waitUnbound(t, p.file)
	}
}

func TestExportedAttachLoopStaysUntilDetach(t *testing.T) {
	requireLoop(t)
	p, want := patternFile(t, t.TempDir(), "disk.img", 1<<20)
	m := &Manager{LockDir: t.TempDir()}
	ctx := context.Background()
	dev, err := m.AttachLoop(ctx, p, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.DetachLoop(ctx, dev) })
	// Nothing holds the device open now, yet it is still bound: no autoclear.
	if got, err := LoopBacking(dev); err != nil || got != p {
		t.Fatalf("LoopBacking(%s) = %q, %v; want %q", dev, got, err, p)
	}
	n := strings.TrimPrefix(dev, "/dev/loop")
	if ro := sysLoop(atoiOrFail(t, n), "ro"); ro != "1" {
		t.Errorf("%s ro = %q, want 1", dev, ro)
	}
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the loop device does not read back the file's bytes")
	}
	if err := m.DetachLoop(ctx, dev); err != nil {
		t.Fatal(err)
	}
	waitUnbound(t, p)
	if got, err := LoopBacking(dev); err != nil || got != "" {
		t.Errorf("after DetachLoop, LoopBacking = %q, %v; want unbound", got, err)
	}
	// Detaching again is not an error; a non-loop path is refused.
	if err := m.DetachLoop(ctx, dev); err != nil {
		t.Errorf("second DetachLoop: %v", err)
	}
	if err := m.DetachLoop(ctx, "/dev/sda"); err == nil {
		t.Error("DetachLoop(/dev/sda) succeeded")
	}
}

func atoiOrFail(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
