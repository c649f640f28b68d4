package qemuproc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/kernelprep"
	"banger/internal/testutil/guestbuild"
)

// snapRounds is how many saves and restores the real test times.
const snapRounds = 3

// TestSnapshotRestoreReal boots Debian's kernel under TCG with an init that
// counts on the console, saves the paused guest (as the daemon will: pause,
// save, copy the disk, resume) a few times, then restores the last state
// into new QEMUs with the disk copy: each clone counts on from the saved
// tick, with its memory intact.
func TestSnapshotRestoreReal(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU boot")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt package qemu-system-x86); cannot boot a VM")
	}
	art, disk := snapArtefacts(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// QEMU as a user that can open nothing of the VM's: the state
		// file reaches it as a descriptor only.
		cred = &syscall.Credential{Uid: testUID, Gid: testUID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := Config{
		Dir: filepath.Join(t.TempDir(), "vm"), Kernel: art.Vmlinux, Initrd: art.Initrd,
		Cmdline:   "root=/dev/vda rw panic=-1 init=/sbin/snapinit",
		MemoryMiB: 512, Drives: []Drive{{Path: disk}}, Accel: AccelTCG, Credential: cred,
	}
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer killQEMU(p)
	waitTick(t, p.ConsoleLog, 20, 0, 120*time.Second)

	var saves []time.Duration
	var state, frozen string
	var saved int
	for i := range snapRounds {
		dir := t.TempDir()
		state, frozen = filepath.Join(dir, StateFileName), filepath.Join(dir, "root.copy")
		t0 := time.Now()
		if err := p.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		saved = lastTick(t, p.ConsoleLog)
		version, err := p.SaveState(ctx, state)
		if err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		saves = append(saves, time.Since(t0))
		if out, err := exec.Command("cp", "--reflink=auto", "--sparse=always", disk, frozen).CombinedOutput(); err != nil {
			t.Fatalf("copy the disk: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
		if n := lastTick(t, p.ConsoleLog); n != saved {
			t.Fatalf("the guest counted from %d to %d while paused", saved, n)
		}
		if err := p.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		waitTick(t, p.ConsoleLog, saved+5, 0, 60*time.Second)
		if i == 0 {
			if bv, err := BinaryVersion(ctx, ""); err != nil || bv != version {
				t.Errorf("the running QEMU says it is %q, its binary %q (%v): a state would never fit", version, bv, err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(state, &st); err != nil {
				t.Fatal(err)
			}
			t.Logf("QEMU %s: state of a 512 MiB guest (64 MiB dirtied): %d MiB apparent, %d MiB on disk", version, st.Size>>20, st.Blocks*512>>20)
		}
	}
	if _, err := os.Stat(state + ".part"); !os.IsNotExist(err) {
		t.Errorf("the temporary state file is left: %v", err)
	}
	killQEMU(p)
	t.Logf("pause+save (RAM and devices) of the running guest, %d rounds: median %s, all %v", snapRounds, median(saves), saves)

	coldVsRestore(ctx, t, cfg, state, frozen, saved)
	t.Run("driver", func(t *testing.T) { driverRoundTrip(ctx, t, cfg, frozen) })

	t.Run("bad state", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), StateFileName)
		if err := os.WriteFile(bad, []byte("not a migration stream"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Dir, c.Drives, c.Incoming = filepath.Join(t.TempDir(), "vm"), []Drive{{Path: frozen}}, bad
		if q, err := Start(ctx, c); err == nil {
			killQEMU(q)
			t.Fatal("QEMU resumed a garbage state")
		} else {
			t.Logf("garbage state refused: %v", err)
		}
		if _, err := os.Stat(QMPSocketPath(c.Dir)); !os.IsNotExist(err) {
			t.Errorf("the monitor socket is left after a failed restore: %v", err)
		}
	})
}

// coldVsRestore alternates a cold boot of cfg with a restore of state onto
// the frozen disk, timing each until the guest's init prints: a restored
// clone must count on from saved, its memory intact.
func coldVsRestore(ctx context.Context, t *testing.T, cfg Config, state, frozen string, saved int) {
	var colds, restores, running []time.Duration
	for i := range snapRounds {
		c := cfg
		c.Dir = filepath.Join(t.TempDir(), "vm")
		t0 := time.Now()
		q, err := Start(ctx, c)
		if err != nil {
			t.Fatalf("cold boot %d: %v", i, err)
		}
		waitTick(t, q.ConsoleLog, 1, 0, 120*time.Second)
		colds = append(colds, time.Since(t0))
		killQEMU(q)

		c.Dir, c.Drives, c.Incoming = filepath.Join(t.TempDir(), "vm"), []Drive{{Path: frozen}}, state
		t0 = time.Now()
		q, err = Start(ctx, c)
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		running = append(running, time.Since(t0))
		first := waitTick(t, q.ConsoleLog, saved+1, saved, 60*time.Second)
		restores = append(restores, time.Since(t0))
		killQEMU(q)
		if first <= saved || first > saved+3 {
			t.Errorf("restore %d: the clone's first tick is %d, want just after the saved %d", i, first, saved)
		}
	}
	t.Logf("cold boot until init prints, %d rounds alternated with restores: median %s, all %v", snapRounds, median(colds), colds)
	t.Logf("restore until init prints again: median %s, all %v (Start returned, guest running: median %s, all %v)", median(restores), restores, median(running), running)
}

// snapArtefacts is bootArtefacts with testdata/snapinit added to the root
// disk as /sbin/snapinit.
func snapArtefacts(t *testing.T) (kernelprep.Artefacts, string) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs not installed (apt package e2fsprogs); cannot add the test's init to the root disk")
	}
	art, disk := bootArtefacts(t)
	initBin := filepath.Join(t.TempDir(), "snapinit")
	guestbuild.GoBuildStatic(t, "./testdata/snapinit", initBin)
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+initBin+" /sbin/snapinit", disk).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	return art, disk
}

// driverRoundTrip saves a VM the Driver started (user-mode network with
// its forwards) through vmm.Snapshotter, and restores a clone through
// Spec.Restore: what the daemon will do.
func driverRoundTrip(ctx context.Context, t *testing.T, cfg Config, disk string) {
	d := NewDriver("")
	spec := vmm.Spec{Name: "snap", RunDir: filepath.Join(t.TempDir(), "vm"), Kernel: cfg.Kernel, Initrd: cfg.Initrd,
		Params: strings.Fields(cfg.Cmdline), VCPUs: 1, MemoryMiB: cfg.MemoryMiB, Drives: []string{disk}, Emulate: true}
	m, _, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background(), nil)
	waitTick(t, ConsoleLogPath(spec.RunDir), 10, 0, 120*time.Second)
	s := m.(vmm.Snapshotter)
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	saved := lastTick(t, ConsoleLogPath(spec.RunDir))
	dir := t.TempDir()
	st, err := s.SaveState(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	m.Stop(context.Background(), nil)
	if st.VMM != vmm.QEMU || !st.Emulated || len(st.Files) != 1 || st.Bytes <= 0 {
		t.Errorf("state %+v", st)
	}
	clone := spec
	clone.Name, clone.RunDir = "clone", filepath.Join(t.TempDir(), "vm")
	clone.Restore = &vmm.Restore{Dir: dir, State: st.WithShape(spec)}
	cm, l, err := d.Start(ctx, clone)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Stop(context.Background(), nil)
	if !l.Restored || l.SSHPort == 0 || !l.Emulated {
		t.Errorf("launch %+v: want restored, emulated, with an SSH forward", l)
	}
	waitTick(t, ConsoleLogPath(clone.RunDir), saved+3, saved, 60*time.Second)
}

func killQEMU(p *Process) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a done context kills at once
	_ = p.Stop(ctx, nil)
}

// tickRe matches whole lines only: QEMU's serial port writes the console
// file a byte at a time, so a read can end inside "intact=tr" and a
// half-written word must not read as a broken pattern.
var tickRe = regexp.MustCompile(`TICK (\d+) intact=(\w+)\r*\n`)

// ticks lists the counter values on the console, failing on a tick that
// saw its memory pattern broken.
func ticks(t *testing.T, console string) []int {
	t.Helper()
	b, _ := os.ReadFile(console)
	var ns []int
	for _, m := range tickRe.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[1])
		if m[2] != "true" {
			t.Fatalf("tick %d: the guest's memory pattern is broken", n)
		}
		ns = append(ns, n)
	}
	return ns
}

func lastTick(t *testing.T, console string) int {
	ns := ticks(t, console)
	if len(ns) == 0 {
		return 0
	}
	return ns[len(ns)-1]
}

// waitTick waits until the console shows tick want and returns the first
// tick it shows; a tick at or below floor (a counter that started over)
// fails the test.
func waitTick(t *testing.T, console string, want, floor int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ns := ticks(t, console)
		if len(ns) > 0 && floor > 0 && ns[0] <= floor {
			t.Fatalf("the console counts from %d, not on from %d: the guest booted afresh", ns[0], floor)
		}
		if len(ns) > 0 && ns[len(ns)-1] >= want {
			return ns[0]
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(console)
			t.Fatalf("no tick %d within %s; console:\n%s", want, within, tail(string(b), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestTicksIgnoresAHalfWrittenLine: a console read that ends inside a line
// (the serial port writes a byte at a time) is not a broken pattern.
func TestTicksIgnoresAHalfWrittenLine(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(console, []byte("TICK 30 intact=true\r\nTICK 31 intact=tr"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ticks(t, console); !slices.Equal(got, []int{30}) {
		t.Fatalf("ticks = %v, want [30]: the half-written line is not a tick yet", got)
	}
}
