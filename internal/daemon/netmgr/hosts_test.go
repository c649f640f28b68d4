package netmgr

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestUpdateHostsPreservesOutsideAndReplacesBlock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	orig := "127.0.0.1\tlocalhost\n# keep me\n::1 ip6-localhost" // no final newline
	if err := os.WriteFile(path, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("10.200.0.2")
	b := netip.MustParseAddr("10.200.0.3")
	if err := UpdateHosts(path, map[string]netip.Addr{"web": b, "db": a}); err != nil {
		t.Fatal(err)
	}
	got := read(t, path)
	want := orig + "\n" + HostsBegin + "\n" + hostsNote + "\n10.200.0.2\tdb.banger\n10.200.0.3\tweb.banger\n" + HostsEnd + "\n"
	if got != want {
		t.Fatalf("after first update:\n%q\nwant\n%q", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640 kept", fi.Mode().Perm())
	}

	// Lines added after the block by someone else stay where they are.
	if err := os.WriteFile(path, []byte(got+"192.0.2.9 other\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := UpdateHosts(path, map[string]netip.Addr{"db": b}); err != nil {
		t.Fatal(err)
	}
	got = read(t, path)
	want = orig + "\n" + HostsBegin + "\n" + hostsNote + "\n10.200.0.3\tdb.banger\n" + HostsEnd + "\n192.0.2.9 other\n"
	if got != want {
		t.Fatalf("after replace:\n%q\nwant\n%q", got, want)
	}

	// No entries removes the block and nothing else.
	if err := UpdateHosts(path, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := read(t, path), orig+"\n192.0.2.9 other\n"; got != want {
		t.Fatalf("after removal:\n%q\nwant\n%q", got, want)
	}
}

func TestUpdateHostsIdempotentAndAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	e := map[string]netip.Addr{"vm1": netip.MustParseAddr("10.200.0.2")}
	if err := UpdateHosts(path, e); err != nil { // creates the file
		t.Fatal(err)
	}
	fi1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// A second identical update must not rewrite the file: same inode.
	if err := UpdateHosts(path, e); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(path)
	if !os.SameFile(fi1, fi2) {
		t.Error("identical update replaced the file")
	}
	// A changing update replaces it by rename: a new inode, and an open
	// reader of the old file still sees the old content whole.
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	e["vm2"] = netip.MustParseAddr("10.200.0.3")
	if err := UpdateHosts(path, e); err != nil {
		t.Fatal(err)
	}
	fi3, _ := os.Stat(path)
	if os.SameFile(fi1, fi3) {
		t.Error("changing update wrote in place instead of renaming")
	}
	buf := make([]byte, 4096)
	n, _ := old.Read(buf)
	if strings.Contains(string(buf[:n]), "vm2") {
		t.Error("the old file was modified")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
}

func TestUpdateHostsBadInputChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	for name, content := range map[string]string{
		"begin only": "127.0.0.1 localhost\n" + HostsBegin + "\n10.200.0.2 x.banger\n",
		"end only":   "127.0.0.1 localhost\n" + HostsEnd + "\n",
		"two blocks": HostsBegin + "\n" + HostsEnd + "\n" + HostsBegin + "\n" + HostsEnd + "\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := UpdateHosts(path, map[string]netip.Addr{"a": netip.MustParseAddr("10.200.0.2")}); err == nil {
			t.Errorf("%s: no error", name)
		}
		if read(t, path) != content {
			t.Errorf("%s: file changed", name)
		}
	}
	content := "127.0.0.1 localhost\n"
	os.WriteFile(path, []byte(content), 0o644)
	for _, bad := range []map[string]netip.Addr{
		{"Bad_Name": netip.MustParseAddr("10.200.0.2")},
		{"-x": netip.MustParseAddr("10.200.0.2")},
		{"ok": {}},
	} {
		if err := UpdateHosts(path, bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
		if read(t, path) != content {
			t.Errorf("%v: file changed", bad)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzRewriteHosts: whatever the file holds, a successful rewrite keeps
// every line outside the block, can be parsed again, and is a fixed point.
func FuzzRewriteHosts(f *testing.F) {
	f.Add([]byte("127.0.0.1 localhost\n"), "web")
	f.Add([]byte(""), "a")
	f.Add([]byte(HostsBegin+"\n1.2.3.4 x.banger\n"+HostsEnd+"\ntail"), "db")
	f.Add([]byte("x\r\n"+HostsBegin+"\r\n"+HostsEnd+"\r\n"), "z")
	f.Add([]byte(HostsEnd+"\n"+HostsBegin), "q")
	f.Fuzz(func(t *testing.T, content []byte, name string) {
		e := map[string]netip.Addr{name: netip.MustParseAddr("10.200.0.7")}
		out, err := rewriteHosts(content, e)
		if err != nil {
			return
		}
		again, err := rewriteHosts(out, e)
		if err != nil {
			t.Fatalf("output not parseable: %v\n%q", err, out)
		}
		if string(again) != string(out) {
			t.Fatalf("not a fixed point:\n%q\n%q", out, again)
		}
		removed, err := rewriteHosts(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(removed), "\n") {
			if strings.TrimSpace(l) == HostsBegin {
				t.Fatalf("block not removed: %q", removed)
			}
		}
		// Outside lines survive: removing the block from the input gives
		// the same as removing it from the output, up to a final newline.
		base, _ := rewriteHosts(content, nil)
		if strings.TrimSuffix(string(base), "\n") != strings.TrimSuffix(string(removed), "\n") {
			t.Fatalf("outside lines changed:\n%q\n%q", base, removed)
		}
	})
}

func TestUpdateHostsKeepsModeAndOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the hosts file another owner")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	if err := os.WriteFile(path, []byte("127.0.0.1\tlocalhost\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4321, 8765); err != nil {
		t.Fatal(err)
	}
	if err := UpdateHosts(path, map[string]netip.Addr{"vm1": netip.MustParseAddr("10.200.0.2")}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != 4321 || st.Gid != 8765 {
		t.Fatalf("mode %o owner %d:%d, want 640 4321:8765", fi.Mode().Perm(), st.Uid, st.Gid)
	}
}
