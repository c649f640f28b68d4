package privhelperd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privhelperd"
	"banger/internal/daemon/privops"
)

// files lists the names under dir, to show that a refusal made nothing.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSnapshotRefusals(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state, real := f.state[self()], f.real[self()]
	outside := t.TempDir()
	secret := mkfile(t, filepath.Join(outside, "secret"), 1<<20)
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	if err := os.MkdirAll(filepath.Join(state, "vms", "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	mustSymlink := func(target, link string) string {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return link
	}
	fileLink := mustSymlink(secret, filepath.Join(state, "images", "innocent.ext4"))
	dirLink := mustSymlink(outside, filepath.Join(state, "vms", "b"))
	cowLink := mustSymlink(secret, filepath.Join(state, "vms", "a", "linked.cow"))
	dangling := mustSymlink(filepath.Join(outside, "planted.cow"), filepath.Join(state, "vms", "a", "dangling.cow"))
	const size = dmsnap.MinCOWSize
	snap := func(name, origin, cow string, size int64) privhelper.Request {
		return privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: name, Origin: origin, COWFile: cow, COWSize: size}
	}
	newCOW := filepath.Join(state, "vms", "a", "root.cow")
	denied, invalid := privhelper.CodeDenied, privhelper.CodeInvalid
	type tc struct {
		name string
		req  privhelper.Request
		code string
		text string
	}
	cases := []tc{
		{"bad name", snap("snap1", origin, newCOW, size), invalid, `snapshot name "snap1" must start with "banger-"`},
		{"bare prefix", snap("banger-", origin, newCOW, size), invalid, "must start with"},
		{"name with a slash", snap("banger-a/b", origin, newCOW, size), invalid, "has '/'"},
		{"origin outside", snap("banger-a", secret, newCOW, size), denied, "outside the caller's state dir"},
		{"origin through a symlink", snap("banger-a", fileLink, newCOW, size), denied, "does not exist, or is outside the caller's state dir"},
		{"origin through a directory symlink", snap("banger-a", filepath.Join(dirLink, "secret"), newCOW, size), denied, "outside the caller's state dir"},
		{"origin through dot-dot", snap("banger-a", state+"/../../"+filepath.Base(outside)+"/secret", newCOW, size), denied, "outside the caller's state dir"},
		{"origin the state dir's parent", snap("banger-a", state+"/..", newCOW, size), denied, "outside the caller's state dir"},
		{"origin is the state dir", snap("banger-a", state, newCOW, size), denied, "outside the caller's state dir"},
		{"relative origin", snap("banger-a", "images/base.ext4", newCOW, size), invalid, "not absolute"},
		{"missing origin", snap("banger-a", filepath.Join(state, "images", "nope"), newCOW, size), denied, "does not exist, or is outside"},
		{"origin a directory", snap("banger-a", filepath.Join(state, "images"), newCOW, size), invalid, "is not a regular file"},
		{"cow in a dir outside", snap("banger-a", origin, filepath.Join(outside, "new.cow"), size), denied, "outside the caller's state dir"},
		{"cow through a directory symlink", snap("banger-a", origin, filepath.Join(dirLink, "new.cow"), size), denied, "outside the caller's state dir"},
		{"cow a symlink to a file outside", snap("banger-a", origin, cowLink, size), denied, "outside the caller's state dir"},
		{"cow a dangling symlink", snap("banger-a", origin, dangling, size), denied, "does not exist, or is outside"},
		{"cow a directory", snap("banger-a", origin, filepath.Join(state, "vms", "a"), size), invalid, "is a directory"},
		{"cow in a missing dir", snap("banger-a", origin, filepath.Join(state, "vms", "nope", "root.cow"), size), denied, "does not exist, or is outside"},
		{"relative cow", snap("banger-a", origin, "root.cow", size), invalid, "not absolute"},
		{"cow too small", snap("banger-a", origin, newCOW, dmsnap.MinCOWSize-1), invalid, fmt.Sprintf("cow_size %d is below the minimum %d bytes", dmsnap.MinCOWSize-1, dmsnap.MinCOWSize)},
		{"cow size missing", snap("banger-a", origin, newCOW, 0), invalid, "below the minimum"},
		{"cow size negative", snap("banger-a", origin, newCOW, -1), invalid, "below the minimum"},
	}
	if os.Geteuid() == 0 {
		foreign := mkfile(t, filepath.Join(state, "images", "nobodys.ext4"), 1<<20)
		foreignCOW := mkfile(t, filepath.Join(state, "vms", "a", "nobodys.cow"), 1<<20)
		foreignDir := filepath.Join(state, "vms", "n")
		if err := os.Mkdir(foreignDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{foreign, foreignCOW, foreignDir} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		fifo := filepath.Join(state, "vms", "a", "pipe.cow")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		null := filepath.Join(state, "images", "null")
		if err := unix.Mknod(null, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			tc{"origin of another uid", snap("banger-a", foreign, newCOW, size), denied, fmt.Sprintf("belongs to uid %d, not the caller (%d)", nobody, self())},
			tc{"origin a device", snap("banger-a", null, newCOW, size), invalid, "is not a regular file"},
			tc{"cow a FIFO", snap("banger-a", origin, fifo, 0), invalid, "is not a regular file"},
			tc{"cow of another uid", snap("banger-a", origin, foreignCOW, 0), denied, fmt.Sprintf("belongs to uid %d", nobody)},
			tc{"cow in a dir of another uid", snap("banger-a", origin, filepath.Join(foreignDir, "root.cow"), size), denied, "does not belong to the caller"},
		)
	}
	beforeState, beforeOutside := files(t, real), files(t, outside)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.do(t, c.req)
			wantCode(t, err, c.code, c.text)
			f.wantNoCalls(t)
			if got := files(t, real); strings.Join(got, "\n") != strings.Join(beforeState, "\n") {
				t.Fatalf("a refused request changed the state dir:\n%s", strings.Join(got, "\n"))
			}
			if got := files(t, outside); strings.Join(got, "\n") != strings.Join(beforeOutside, "\n") {
				t.Fatalf("a refused request changed a dir outside:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

// TestOriginFIFODoesNotBlockTheHelper: a FIFO named as origin must be
// refused, not opened for reading and waited on, which would hold the
// request, and the helper's shutdown, until someone writes to it.
func TestOriginFIFODoesNotBlockTheHelper(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	fifo := filepath.Join(state, "images", "pipe.ext4")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := f.client().Do(context.Background(), privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: "banger-a",
			Origin: fifo, COWFile: filepath.Join(state, "images", "root.cow"), COWSize: dmsnap.MinCOWSize})
		res <- err
	}()
	select {
	case err := <-res:
		wantCode(t, err, privhelper.CodeInvalid, "is not a regular file")
	case <-time.After(time.Minute): // only so that a blocked helper fails the test instead of hanging it
		if w, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close() // lets the blocked open return, so the helper can stop
		}
		<-res
		t.Fatal("the helper blocked opening a FIFO named as origin")
	}
	f.wantNoCalls(t)
}

func TestCreateSnapshotHandsOverOpenFiles(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state, real := f.state[self()], f.real[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	if err := os.MkdirAll(filepath.Join(state, "vms", "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	cow := filepath.Join(state, "vms", "a", "root.cow")
	const size = 4 << 20
	s, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, cow, size)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "banger-a" || s.Device != "/dev/mapper/banger-a" || s.Sectors != 4096 {
		t.Errorf("answer %+v does not carry the executor's snapshot", s)
	}
	cs := f.rec.createCalls()
	if len(cs) != 1 {
		t.Fatalf("executor got %d CreateSnapshot calls, want 1", len(cs))
	}
	c := cs[0]
	if c.uid != self() || c.name != "banger-a" || c.cowSize != size {
		t.Errorf("executor got %+v", c)
	}
	// The executor gets the files the helper checked and opened, not the
	// caller's paths, which could be swapped after the check.
	for _, p := range []string{c.origin, c.cow} {
		if !strings.HasPrefix(p, "/proc/self/fd/") {
			t.Errorf("executor got path %q, want /proc/self/fd/N", p)
		}
	}
	if want := filepath.Join(real, "images", "base.ext4"); c.originReal != want || c.originMode != unix.O_RDONLY {
		t.Errorf("origin fd names %q mode %d, want %q read-only", c.originReal, c.originMode, want)
	}
	realCOW := filepath.Join(real, "vms", "a", "root.cow")
	if c.cowReal != realCOW || c.cowMode != unix.O_RDWR {
		t.Errorf("cow fd names %q mode %d, want %q read-write", c.cowReal, c.cowMode, realCOW)
	}
	if c.cowSizeNow != size || c.cowOwner != int64(self()) {
		t.Errorf("the COW file the executor saw is %d bytes owned by %d, want %d owned by %d", c.cowSizeNow, c.cowOwner, size, self())
	}
	st, err := os.Stat(cow)
	if err != nil {
		t.Fatalf("the new COW file is gone: %v", err)
	}
	if st.Size() != size || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != self() {
		t.Errorf("COW file is %d bytes, mode %v, uid %d; want %d, 0600, %d", st.Size(), st.Mode(), st.Sys().(*syscall.Stat_t).Uid, size, self())
	}

	// An existing COW file is reused as it is, with any cow_size.
	if err := os.WriteFile(filepath.Join(state, "vms", "a", "old.cow"), []byte("changes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client().CreateSnapshot(bounded(t), "banger-b", origin, filepath.Join(state, "vms", "a", "old.cow"), 0); err != nil {
		t.Fatal(err)
	}
	if c := f.rec.createCalls()[1]; c.cowReal != filepath.Join(real, "vms", "a", "old.cow") || c.cowSizeNow != int64(len("changes")) {
		t.Errorf("reused COW: executor saw %q of %d bytes", c.cowReal, c.cowSizeNow)
	}
}

func TestCreateSnapshotFailureRemovesOnlyTheNewCOWFile(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	kept := filepath.Join(state, "vms", "a", "kept.cow")
	if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, []byte("the VM's changes"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.rec.createErr = errors.New("device-mapper said no")

	fresh := filepath.Join(state, "vms", "a", "fresh.cow")
	_, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, fresh, dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if len(f.rec.createCalls()) != 1 || f.rec.createCalls()[0].cowSizeNow != dmsnap.MinCOWSize {
		t.Fatalf("the executor did not see the new COW file: %+v", f.rec.createCalls())
	}
	if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the COW file the helper made is still there after the executor failed: %v", err)
	}

	_, err = f.client().CreateSnapshot(bounded(t), "banger-a", origin, kept, dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if b, err := os.ReadFile(kept); err != nil || string(b) != "the VM's changes" {
		t.Errorf("a failed snapshot touched the existing COW file: %q, %v", b, err)
	}
}

// TestCreateSnapshotCleanupFollowsNoSwappedDir swaps the COW file's
// directory for a symlink while the executor runs, then fails it: the
// helper's cleanup must remove the file it made, not a same-named file
// where the symlink points.
func TestCreateSnapshotCleanupFollowsNoSwappedDir(t *testing.T) {
	f := serve(t, privhelperd.DefaultPolicy(self()))
	state := f.state[self()]
	origin := mkfile(t, filepath.Join(state, "images", "base.ext4"), 2<<20)
	vmDir := filepath.Join(state, "vms", "a")
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	victim := filepath.Join(outside, "root.cow")
	if err := os.WriteFile(victim, []byte("not the caller's"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.rec.createErr = errors.New("device-mapper said no")
	f.rec.onCreate = func() {
		if err := os.Rename(vmDir, vmDir+".moved"); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(outside, vmDir); err != nil {
			t.Error(err)
		}
	}
	_, err := f.client().CreateSnapshot(bounded(t), "banger-a", origin, filepath.Join(vmDir, "root.cow"), dmsnap.MinCOWSize)
	wantCode(t, err, privhelper.CodeFailed, "device-mapper said no")
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("the helper's cleanup followed the swapped-in symlink and removed %s: %v", victim, err)
	}
	if _, err := os.Lstat(filepath.Join(vmDir+".moved", "root.cow")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the COW file the helper made is still there: %v", err)
	}
}

func TestRemoveAndListSnapshotsAreTheCallers(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(self(), nobody))
	mine := privops.Snapshot{Name: "banger-mine", Device: "/dev/mapper/banger-mine", COWFile: filepath.Join(f.real[self()], "vms", "a", "root.cow")}
	theirsName := privhelper.SnapshotPrefix(nobody) + "theirs"
	theirs := privops.Snapshot{Name: theirsName, Device: "/dev/mapper/" + theirsName, COWFile: filepath.Join(f.real[nobody], "vms", "b", "root.cow")}
	stray := privops.Snapshot{Name: "banger-stray", Device: "/dev/mapper/banger-stray", COWFile: "/var/tmp/root.cow"}
	unknown := privops.Snapshot{Name: "banger-unknown", Device: "/dev/mapper/banger-unknown"}
	// A COW file next to the state dir, sharing its name as a prefix.
	sibling := privops.Snapshot{Name: "banger-sibling", Device: "/dev/mapper/banger-sibling", COWFile: f.real[self()] + "x/root.cow"}
	f.rec.snaps = []privops.Snapshot{mine, theirs, stray, unknown, sibling}

	l, err := f.client().ListSnapshots(bounded(t))
	if err != nil || len(l) != 1 || l[0] != mine {
		t.Fatalf("root lists %+v, %v; want only %s", l, err, mine.Name)
	}
	resp, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpListSnapshots})
	if err != nil || len(resp.Snapshots) != 1 || resp.Snapshots[0].Name != theirs.Name || resp.Snapshots[0].COWFile != theirs.COWFile {
		t.Fatalf("nobody lists %+v, %v; want only %s", resp.Snapshots, err, theirs.Name)
	}

	for _, s := range []privops.Snapshot{theirs, stray, unknown, sibling} {
		err := f.client().RemoveSnapshot(bounded(t), s.Name)
		wantCode(t, err, privhelper.CodeDenied, "snapshot "+s.Name+" is not the caller's")
	}
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: mine.Name})
	wantCode(t, err, privhelper.CodeDenied, "snapshot banger-mine is not the caller's")
	_, err = f.client().Do(bounded(t), privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: "mine"})
	wantCode(t, err, privhelper.CodeInvalid, "must start with")
	for _, c := range f.rec.list() {
		if strings.Contains(c, "remove_snapshot") {
			t.Fatalf("a refused remove reached the executor: %q", f.rec.list())
		}
	}

	if _, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: theirs.Name}); err != nil {
		t.Fatal(err)
	}
	if got := f.rec.list(); got[len(got)-1] != fmt.Sprintf("uid=%d remove_snapshot %s", nobody, theirsName) {
		t.Fatalf("nobody's remove of its own snapshot: executor saw %q", got)
	}
}

// TestRemoveSnapshotNeedsTheCallersPrefix: a user may remove only
// snapshots named under their own uid, even one that did not exist when
// the helper listed the snapshots (another user's, made in between).
func TestRemoveSnapshotNeedsTheCallersPrefix(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(self(), nobody))
	for _, name := range []string{privhelper.SnapshotPrefix(1000) + "a", privhelper.SnapshotPrefix(self()) + "a", "banger-a"} {
		_, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: name})
		wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("snapshot %s is not the caller's: its name must start with %q", name, privhelper.SnapshotPrefix(nobody)))
	}
	f.wantNoCalls(t)
	// Root removes any banger snapshot whose COW file is in its state dir,
	// or that the listing does not show.
	if err := f.client().RemoveSnapshot(bounded(t), privhelper.SnapshotPrefix(1000)+"a"); err != nil {
		t.Fatal(err)
	}
}

// TestStateDirSymlinkedToRoot: a user whose state dir is a symlink to "/"
// (or to anything not theirs) gets no state dir at all, so another user's
// snapshots are not theirs to list or remove, and no file becomes theirs.
func TestStateDirSymlinkedToRoot(t *testing.T) {
	needRoot(t)
	f := serve(t, privhelperd.DefaultPolicy(nobody))
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink("/", link); err != nil {
		t.Fatal(err)
	}
	f.state[nobody] = link
	roots := privops.Snapshot{Name: "banger-roots", Device: "/dev/mapper/banger-roots", COWFile: "/var/lib/banger/vms/x/root.cow"}
	f.rec.snaps = []privops.Snapshot{roots}

	r, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpHello})
	if err != nil || r.StateDir != "" {
		t.Fatalf("hello = %+v, %v; want no state dir", r, err)
	}
	if r, err := f.asNobody(t, privhelper.Request{Op: privhelper.OpListSnapshots}); err != nil || len(r.Snapshots) != 0 {
		t.Fatalf("list = %+v, %v; want nothing", r, err)
	}
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpRemoveSnapshot, Name: roots.Name})
	wantCode(t, err, privhelper.CodeDenied, "not the caller's")
	_, err = f.asNobody(t, privhelper.Request{Op: privhelper.OpCreateSnapshot, Name: privhelper.SnapshotPrefix(nobody) + "x",
		Origin: filepath.Join(link, "etc", "shadow"), COWFile: filepath.Join(link, "tmp", "x.cow"), COWSize: 1 << 20})
	wantCode(t, err, privhelper.CodeDenied, "is not a directory of that user's")
	for _, c := range f.rec.list() {
		if strings.Contains(c, "remove_snapshot") || strings.Contains(c, "create_snapshot") {
			t.Fatalf("a refused request reached the executor: %q", f.rec.list())
		}
	}
}
