package privhelper_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/privhelper"
)

// recorder is an Executor that only records what reached it.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) { r.mu.Lock(); r.calls = append(r.calls, s); r.mu.Unlock() }
func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}
func (r *recorder) EnsureBridge(_ context.Context, b, s string) error {
	r.add("bridge " + b + " " + s)
	return nil
}
func (r *recorder) TeardownBridge(_ context.Context, b string) error {
	r.add("teardown " + b)
	return nil
}
func (r *recorder) CreateTap(_ context.Context, t, b string, owner uint32) error {
	r.add(fmt.Sprintf("tap %s %s %d", t, b, owner))
	return nil
}
func (r *recorder) DeleteTap(_ context.Context, t string) error { r.add("deltap " + t); return nil }
func (r *recorder) EnableIPForward(context.Context) error       { r.add("forward"); return nil }
func (r *recorder) LoopAttach(_ context.Context, p string, ro bool) (string, error) {
	r.add(fmt.Sprintf("loop %s %v", p, ro))
	return "/dev/loop7", nil
}
func (r *recorder) LoopDetach(_ context.Context, d string) error { r.add("unloop " + d); return nil }

// TestMain lets the test binary act as a client running as another user.
func TestMain(m *testing.M) {
	if sock := os.Getenv("PRIVHELPER_TEST_CLIENT"); sock != "" {
		_, err := privhelper.Client{Socket: sock}.Do(context.Background(), privhelper.Request{Op: privhelper.OpHello})
		if err != nil {
			fmt.Println(err.Error())
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type fixture struct {
	sock  string
	state string
	rec   *recorder
}

func serve(t *testing.T, policy privhelper.Policy) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{sock: filepath.Join(dir, "helper.sock"), state: filepath.Join(t.TempDir(), "state"), rec: &recorder{}}
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		t.Fatal(err)
	}
	if policy.StateDir == nil {
		policy.StateDir = func(uint32) (string, error) { return f.state, nil }
	}
	ln, err := privhelper.Listen(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&privhelper.Server{Policy: policy, Exec: f.rec, Version: "test"}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) do(t *testing.T, r privhelper.Request) (privhelper.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return privhelper.Client{Socket: f.sock}.Do(ctx, r)
}

func wantCode(t *testing.T, err error, code, text string) {
	t.Helper()
	var e *privhelper.Error
	if !errors.As(err, &e) || e.Code != code || !strings.Contains(e.Msg, text) {
		t.Fatalf("err = %v, want %s containing %q", err, code, text)
	}
}

func self() uint32 { return uint32(os.Getuid()) }

func TestAllowedRequestsReachTheExecutor(t *testing.T) {
	f := serve(t, privhelper.DefaultPolicy(self()))
	if r, err := f.do(t, privhelper.Request{Op: privhelper.OpHello}); err != nil || r.Version != "test" {
		t.Fatalf("hello = %+v, %v", r, err)
	}
	disk := filepath.Join(f.state, "vms", "x", "root.ext4")
	if err := os.MkdirAll(filepath.Dir(disk), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range []privhelper.Request{
		{Op: privhelper.OpEnsureBridge, Bridge: "banger0", Subnet: "10.200.0.0/24"},
		{Op: privhelper.OpCreateTap, Tap: "bgtap1a2b", Bridge: "banger0"},
		{Op: privhelper.OpDeleteTap, Tap: "bgtap1a2b"},
		{Op: privhelper.OpEnableForward},
		{Op: privhelper.OpLoopAttach, Path: disk, ReadOnly: true},
		{Op: privhelper.OpLoopDetach, Device: "/dev/loop7"},
		{Op: privhelper.OpTeardownBridge, Bridge: "banger0"},
	} {
		if _, err := f.do(t, r); err != nil {
			t.Fatalf("%s: %v", r.Op, err)
		}
	}
	want := []string{"bridge banger0 10.200.0.0/24", fmt.Sprintf("tap bgtap1a2b banger0 %d", self()), "deltap bgtap1a2b",
		"forward", "loop " + disk + " true", "unloop /dev/loop7", "teardown banger0"}
	if got := f.rec.list(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("executor saw %q\nwant %q", got, want)
	}
}

func TestRefusals(t *testing.T) {
	f := serve(t, privhelper.DefaultPolicy(self()))
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(f.state, "innocent.ext4")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  privhelper.Request
		code string
		text string
	}{
		{"foreign bridge", privhelper.Request{Op: privhelper.OpEnsureBridge, Bridge: "docker0", Subnet: "10.200.0.0/24"}, privhelper.CodeDenied, `"docker0" is not banger's`},
		{"foreign tap", privhelper.Request{Op: privhelper.OpDeleteTap, Tap: "eth0"}, privhelper.CodeDenied, `"eth0" is not banger's`},
		{"tap name too long", privhelper.Request{Op: privhelper.OpDeleteTap, Tap: "bgtap0123456789abc"}, privhelper.CodeInvalid, "longer than 15"},
		{"tap name chars", privhelper.Request{Op: privhelper.OpDeleteTap, Tap: "bgtap/../x"}, privhelper.CodeInvalid, "has"},
		{"path outside", privhelper.Request{Op: privhelper.OpLoopAttach, Path: secret}, privhelper.CodeDenied, "outside the caller's state dir"},
		{"path via symlink", privhelper.Request{Op: privhelper.OpLoopAttach, Path: link}, privhelper.CodeDenied, "outside the caller's state dir"},
		{"path with dots", privhelper.Request{Op: privhelper.OpLoopAttach, Path: f.state + "/.."}, privhelper.CodeDenied, "outside"},
		{"relative path", privhelper.Request{Op: privhelper.OpLoopAttach, Path: "root.ext4"}, privhelper.CodeInvalid, "not absolute"},
		{"state dir itself", privhelper.Request{Op: privhelper.OpLoopAttach, Path: f.state}, privhelper.CodeDenied, "outside"},
		{"subnet outside", privhelper.Request{Op: privhelper.OpEnsureBridge, Bridge: "banger0", Subnet: "192.168.1.0/24"}, privhelper.CodeDenied, "outside the allowed range"},
		{"subnet wider than range", privhelper.Request{Op: privhelper.OpEnsureBridge, Bridge: "banger0", Subnet: "10.0.0.0/8"}, privhelper.CodeDenied, "outside the allowed range"},
		{"subnet not network", privhelper.Request{Op: privhelper.OpEnsureBridge, Bridge: "banger0", Subnet: "10.200.0.5/24"}, privhelper.CodeInvalid, "network address"},
		{"not a loop device", privhelper.Request{Op: privhelper.OpLoopDetach, Device: "/dev/sda"}, privhelper.CodeInvalid, "not a loop device"},
		{"unknown op", privhelper.Request{Op: "run_command"}, privhelper.CodeInvalid, "unknown operation"},
		{"stray field", privhelper.Request{Op: privhelper.OpEnableForward, Path: "/etc/shadow"}, privhelper.CodeInvalid, `does not take "path"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.do(t, c.req)
			wantCode(t, err, c.code, c.text)
		})
	}
	if calls := f.rec.list(); len(calls) != 0 {
		t.Fatalf("refused requests reached the executor: %q", calls)
	}
}

// raw sends bytes as a request and decodes the answer.
func raw(t *testing.T, sock string, data []byte) privhelper.Response {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.UnixConn).CloseWrite()
	var r privhelper.Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMalformedRequests(t *testing.T) {
	f := serve(t, privhelper.DefaultPolicy(self()))
	for name, data := range map[string]string{
		"garbage":       "not json at all",
		"unknown field": `{"version":1,"op":"hello","command":"rm -rf /"}`,
		"wrong version": `{"version":99,"op":"hello"}`,
		"two values":    `{"version":1,"op":"hello"}{"version":1,"op":"hello"}`,
		"oversized":     `{"version":1,"op":"hello","bridge":"` + strings.Repeat("a", privhelper.MaxRequest) + `"}`,
		"wrong type":    `{"version":"1","op":"hello"}`,
	} {
		t.Run(name, func(t *testing.T) {
			r := raw(t, f.sock, []byte(data))
			if r.OK || r.Code != privhelper.CodeInvalid {
				t.Fatalf("answer %+v, want invalid", r)
			}
		})
	}
	if calls := f.rec.list(); len(calls) != 0 {
		t.Fatalf("malformed requests reached the executor: %q", calls)
	}
}

func TestUIDNotAllowed(t *testing.T) {
	f := serve(t, privhelper.DefaultPolicy(self()+4242))
	_, err := f.do(t, privhelper.Request{Op: privhelper.OpHello})
	wantCode(t, err, privhelper.CodeDenied, fmt.Sprintf("uid %d is not allowed", self()))
}

// TestOtherUserIsIdentifiedByKernel runs a client as user nobody: the
// helper must see that uid through SO_PEERCRED and refuse it, whatever the
// client claims.
func TestOtherUserIsIdentifiedByKernel(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	f := serve(t, privhelper.DefaultPolicy(0))
	if err := os.Chmod(filepath.Dir(f.sock), 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary must be reachable by nobody.
	tmp := filepath.Join(filepath.Dir(f.sock), "client.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tmp)
	cmd.Env = []string{"PRIVHELPER_TEST_CLIENT=" + f.sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "uid 65534 is not allowed") {
		t.Fatalf("client as nobody: %v\n%s", err, out)
	}
}
