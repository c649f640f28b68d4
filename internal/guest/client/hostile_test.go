package client_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"banger/internal/guest/client"
	"banger/internal/guest/proto"
	"banger/internal/testutil"
	"banger/internal/testutil/treestate"
)

// hostileGuest stands in for a guest agent that answers every copy-out
// with the stream stream() returns, whatever was asked. It records the
// paths it was asked for.
func hostileGuest(t *testing.T, stream func() []byte) (client.OpenFunc, *[]string) {
	return hostileGuestWriting(t, func(w io.Writer) error { _, err := w.Write(stream()); return err })
}

// hostileGuestWriting is hostileGuest with a guest that writes its stream
// itself; when write fails, the stream ends without its eof frame.
func hostileGuestWriting(t *testing.T, write func(w io.Writer) error) (client.OpenFunc, *[]string) {
	t.Helper()
	sock := filepath.Join(testutil.ShortDir(t, "bgt"), "hostile.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				pc := proto.NewConn(c)
				if f, err := pc.Next(); err != nil || f.Type != proto.TypeHello {
					return
				}
				hello := proto.Hello{Protocol: proto.Version, Version: "hostile", Capabilities: []string{proto.CapCopyOut, proto.CapHealth}}
				if err := pc.WriteJSON(proto.TypeHello, hello); err != nil {
					return
				}
				f, err := pc.Next()
				if err != nil || f.Type != proto.TypeCopyOut {
					return
				}
				var req proto.CopyOutRequest
				if proto.DecodeJSON(f, &req) == nil {
					mu.Lock()
					asked = append(asked, req.Path)
					mu.Unlock()
				}
				if err := write(pc.DataWriter(proto.TypeData)); err != nil {
					return
				}
				_ = pc.WriteFrame(proto.TypeEOF, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return client.NetOpener("unix", sock), &asked
}

// hdrs builds a tar stream of the given headers, each regular file filled
// with its size in "x" bytes.
func hdrs(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func reg(name string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Size: 5}
}

// diffTrees lists what changed between two trees, ignoring the paths
// under allowed (relative to the root) and the modification of the
// directory holding allowed.
func diffTrees(before, after map[string]treestate.Entry, allowed string) []string {
	var out []string
	under := func(p string) bool {
		return allowed != "" && (p == allowed || strings.HasPrefix(p, allowed+"/"))
	}
	for p, b := range before {
		if under(p) {
			continue
		}
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, "removed "+p)
		case a != b:
			out = append(out, fmt.Sprintf("changed %s: %+v -> %+v", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok && !under(p) {
			out = append(out, "created "+p)
		}
	}
	return out
}

// victimHome builds a temp tree standing for the user's machine: a home
// directory (the copy's destination) holding what an attacker wants, and
// a sibling directory outside it.
func victimHome(t *testing.T) (base, home string) {
	t.Helper()
	base = t.TempDir()
	home = filepath.Join(base, "home")
	files := map[string]string{
		"home/.ssh/authorized_keys": "ssh-ed25519 AAAA mine\n",
		"home/.bashrc":              "# mine\n",
		"home/existing.txt":         "precious\n",
		"outside/secret":            "do not touch\n",
	}
	for p, data := range files {
		full := filepath.Join(base, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return base, home
}

// TestCopyOutFromHostileGuest has a guest answer a copy of
// /root/wanted.txt into a home directory with streams meant to reach
// beyond home/wanted.txt. Each must fail and change nothing anywhere in
// the temp tree, home/wanted.txt included (what the copy made is removed).
func TestCopyOutFromHostileGuest(t *testing.T) {
	abs := func(base string) string { return filepath.Join(base, "home", ".bashrc") }
	cases := []struct {
		name    string
		stream  func(t *testing.T, base string) []byte
		want    string // in the error
		entries int    // MaxEntries, when not the default
	}{
		{"dotdot", func(t *testing.T, _ string) []byte { return hdrs(t, reg("../.bashrc")) }, `"../.bashrc"`, 0},
		{"dotdot under the name", func(t *testing.T, _ string) []byte {
			return hdrs(t, reg("wanted.txt"), reg("wanted.txt/../.bashrc"))
		}, `".." component`, 0},
		{"dotdot to outside", func(t *testing.T, _ string) []byte { return hdrs(t, reg("../outside/secret")) }, `".." component`, 0},
		{"absolute", func(t *testing.T, base string) []byte { return hdrs(t, reg(abs(base))) }, "absolute path", 0},
		{"authorized_keys", func(t *testing.T, _ string) []byte {
			return hdrs(t, reg("wanted.txt"), reg(".ssh/authorized_keys"))
		}, `".ssh/authorized_keys": outside "wanted.txt"`, 0},
		{"bashrc first", func(t *testing.T, _ string) []byte { return hdrs(t, reg(".bashrc")) }, `".bashrc": outside`, 0},
		{"symlink then a file through it", func(t *testing.T, _ string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt", Typeflag: tar.TypeSymlink, Linkname: ".ssh"},
				reg("wanted.txt/authorized_keys"))
		}, "is a symlink", 0},
		{"inner symlink then a file through it", func(t *testing.T, base string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o755},
				&tar.Header{Name: "wanted.txt/l", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(base, "outside")},
				reg("wanted.txt/l/secret"))
		}, "is a symlink", 0},
		{"hard link to /etc/passwd", func(t *testing.T, _ string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"})
		}, "hard link target absolute path", 0},
		{"hard link to a file of the user", func(t *testing.T, _ string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt", Typeflag: tar.TypeLink, Linkname: ".ssh/authorized_keys"})
		}, "hard link target outside", 0},
		{"the name twice", func(t *testing.T, _ string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("wanted.txt/a"), reg("wanted.txt/a"))
		}, "already exists", 0},
		{"device without a skip", func(t *testing.T, _ string) []byte {
			return hdrs(t, &tar.Header{Name: "wanted.txt", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o666})
		}, "block device", -1},
		{"too many entries", func(t *testing.T, _ string) []byte {
			entries := []*tar.Header{{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o755}}
			for i := range 5000 {
				entries = append(entries, &tar.Header{Name: fmt.Sprintf("wanted.txt/%d", i), Typeflag: tar.TypeReg})
			}
			return hdrs(t, entries...)
		}, "more than 1000 entries", 1000},
		{"cut inside a file", func(t *testing.T, _ string) []byte {
			b := hdrs(t, &tar.Header{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("wanted.txt/whole"),
				&tar.Header{Name: "wanted.txt/cut", Typeflag: tar.TypeReg, Size: 100000})
			return b[:len(b)-60000]
		}, "unexpected EOF", 0},
		{"garbage after the end", func(t *testing.T, _ string) []byte {
			return append(hdrs(t, reg("wanted.txt")), make([]byte, 2<<20)...)
		}, "follow the tar stream's end", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base, home := victimHome(t)
			stream := tc.stream(t, base)
			open, asked := hostileGuest(t, func() []byte { return stream })
			c := client.New(open, client.Config{Version: "test"})
			before := treestate.Snapshot(t, base)
			opts := client.CopyOutOptions{MaxEntries: tc.entries, Skipped: func(string, string) {}}
			if tc.entries == -1 {
				opts = client.CopyOutOptions{}
			}
			err := c.CopyOut(context.Background(), "/root/wanted.txt", home, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if diff := diffTrees(before, treestate.Snapshot(t, base), ""); len(diff) > 0 {
				t.Errorf("the failed copy changed the tree:\n%s", strings.Join(diff, "\n"))
			}
			if len(*asked) != 1 || (*asked)[0] != "/root/wanted.txt" {
				t.Errorf("the guest was asked for %q", *asked)
			}
		})
	}
}

// TestCopyOutNeutralisesHostileEntries checks the entries a copy may take
// but not as sent: a setuid root file, a device node, a FIFO. Only
// home/wanted.txt may appear.
func TestCopyOutNeutralisesHostileEntries(t *testing.T) {
	base, home := victimHome(t)
	stream := hdrs(t,
		&tar.Header{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o4777},
		&tar.Header{Name: "wanted.txt/suid", Typeflag: tar.TypeReg, Mode: 0o6755, Uid: 0, Gid: 0, Size: 5},
		&tar.Header{Name: "wanted.txt/owned", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1234, Gid: 5678, Size: 5},
		&tar.Header{Name: "wanted.txt/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o666},
		&tar.Header{Name: "wanted.txt/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
		&tar.Header{Name: "wanted.txt/fifo", Typeflag: tar.TypeFifo, Mode: 0o666},
	)
	open, _ := hostileGuest(t, func() []byte { return stream })
	c := client.New(open, client.Config{Version: "test"})
	before := treestate.Snapshot(t, base)
	var skipped []string
	opts := client.CopyOutOptions{Skipped: func(name, what string) { skipped = append(skipped, name+" "+what) }}
	if err := c.CopyOut(context.Background(), "/root/wanted.txt", home, opts); err != nil {
		t.Fatal(err)
	}
	if diff := diffTrees(before, treestate.Snapshot(t, base), "home/wanted.txt"); len(diff) > 0 {
		t.Errorf("the copy changed more than home/wanted.txt:\n%s", strings.Join(diff, "\n"))
	}
	want := []string{"wanted.txt/sda block device", "wanted.txt/null character device", "wanted.txt/fifo FIFO"}
	if fmt.Sprint(skipped) != fmt.Sprint(want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}
	got := treestate.Snapshot(t, filepath.Join(home, "wanted.txt"))
	if len(got) != 3 {
		t.Errorf("home/wanted.txt holds %d entries, want the directory, suid and owned: %v", len(got), got)
	}
	me := uint32(os.Geteuid())
	for p, s := range got {
		if s.Mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 || s.Mode.Perm()&0o022 != 0 {
			t.Errorf("%s: mode %v: setuid, setgid or group/world write survived", p, s.Mode)
		}
		if s.UID != me {
			t.Errorf("%s: owner %d, want %d (whoever copies)", p, s.UID, me)
		}
	}
}

// TestCopyOutPreserve keeps modes (and owners as root) when asked.
func TestCopyOutPreserve(t *testing.T) {
	_, home := victimHome(t)
	stream := hdrs(t,
		&tar.Header{Name: "wanted.txt", Typeflag: tar.TypeReg, Mode: 0o4775, Uid: 1234, Gid: 5678, Size: 5},
	)
	open, _ := hostileGuest(t, func() []byte { return stream })
	c := client.New(open, client.Config{Version: "test"})
	if err := c.CopyOut(context.Background(), "/root/wanted.txt", home, client.CopyOutOptions{Preserve: true}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(home, "wanted.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o775|fs.ModeSetuid {
		t.Errorf("mode %v, want -rwsrwxr-x", fi.Mode())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if os.Geteuid() == 0 && (st.Uid != 1234 || st.Gid != 5678) {
		t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
	}
}

// TestCopyOutRefusesExistingName: the name the copy would create exists.
// Without --overwrite nothing changes; with it, the file is replaced whole
// and a symlink in its place is replaced, not followed.
func TestCopyOutRefusesExistingName(t *testing.T) {
	base, home := victimHome(t)
	stream := hdrs(t, reg("existing.txt"))
	open, _ := hostileGuest(t, func() []byte { return stream })
	c := client.New(open, client.Config{Version: "test"})
	before := treestate.Snapshot(t, base)
	err := c.CopyOut(context.Background(), "/root/existing.txt", home, client.CopyOutOptions{})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("got %v, want a refusal", err)
	}
	if diff := diffTrees(before, treestate.Snapshot(t, base), ""); len(diff) > 0 {
		t.Errorf("the refused copy changed the tree:\n%s", strings.Join(diff, "\n"))
	}

	// --overwrite: the existing file is replaced.
	if err := c.CopyOut(context.Background(), "/root/existing.txt", home, client.CopyOutOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "existing.txt")); string(b) != "xxxxx" {
		t.Errorf("existing.txt = %q after --overwrite", b)
	}
	// A symlink where the file goes is replaced, never written through.
	secret := filepath.Join(base, "outside", "secret")
	if err := os.Remove(filepath.Join(home, "existing.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(home, "existing.txt")); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyOut(context.Background(), "/root/existing.txt", home, client.CopyOutOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(secret); string(b) != "do not touch\n" {
		t.Errorf("the copy wrote through a symlink: secret = %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(home, "existing.txt")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("existing.txt: %v, %v; want a regular file in place of the symlink", fi, err)
	}
	// A cut stream under --overwrite leaves the old file whole.
	cut := hdrs(t, &tar.Header{Name: "existing.txt", Typeflag: tar.TypeReg, Size: 100000})
	open2, _ := hostileGuest(t, func() []byte { return cut[:len(cut)-60000] })
	c2 := client.New(open2, client.Config{Version: "test"})
	err = c2.CopyOut(context.Background(), "/root/existing.txt", home, client.CopyOutOptions{Overwrite: true})
	if err == nil {
		t.Fatal("a cut stream was accepted")
	}
	if b, _ := os.ReadFile(filepath.Join(home, "existing.txt")); string(b) != "xxxxx" {
		t.Errorf("existing.txt = %d bytes after a failed --overwrite, want the old 5", len(b))
	}
	entries, _ := os.ReadDir(home)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".banger-tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestCopyOutCancelRemovesWhatItMade: a copy cancelled part way through
// an endless file removes home/wanted.txt.
func TestCopyOutCancelRemovesWhatItMade(t *testing.T) {
	base, home := victimHome(t)
	before := treestate.Snapshot(t, base)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	head := hdrs(t, &tar.Header{Name: "wanted.txt/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("wanted.txt/first"))
	head = head[:len(head)-1024] // without the end marker
	open, _ := hostileGuestWriting(t, func(w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		var hb bytes.Buffer
		_ = tar.NewWriter(&hb).WriteHeader(&tar.Header{Name: "wanted.txt/endless", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
		if _, err := w.Write(hb.Bytes()); err != nil {
			return err
		}
		chunk := make([]byte, 64<<10)
		for sent := 0; ; sent += len(chunk) {
			if sent == 4<<20 {
				cancel() // the host is well into the endless file
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
	})
	c := client.New(open, client.Config{Version: "test"})
	err := c.CopyOut(ctx, "/root/wanted.txt", home, client.CopyOutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want the copy cancelled", err)
	}
	if diff := diffTrees(before, treestate.Snapshot(t, base), ""); len(diff) > 0 {
		t.Errorf("the cancelled copy left:\n%s", strings.Join(diff, "\n"))
	}
}
