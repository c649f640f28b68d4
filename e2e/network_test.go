//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/store"
	"banger/internal/testutil"
)

// httpGet is a shell command fetching / from host:port with busybox nc
// (busybox's static wget crashes in glibc's resolver on Debian).
func httpGet(host string, port int) string {
	return fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 5 %s %d`, host, port)
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestBridgedNetworking runs bangerd inside a network namespace made by the
// test, with a second namespace standing for the outside world: two VMs on
// the bridge reach each other and the host by name, reach the outside
// server through NAT, and a published port answers on the host. After
// both VMs are removed, no bridge, tap, rule, lease or hosts line is left.
// outsideWorld makes two network namespaces joined by a veth pair: one
// for banger (returned), routed through the other, where a web server
// answers "outside" on 198.51.100.2:9000. All is removed when the test
// ends.
func outsideWorld(t *testing.T) string {
	t.Helper()
	suffix := fmt.Sprint(os.Getpid() % 100000)
	hostNS, outNS := "bge2e"+suffix, "bge2eout"+suffix
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", hostNS).Run()
		_ = exec.Command("ip", "netns", "del", outNS).Run()
	})
	sh(t, "ip", "netns", "add", hostNS)
	sh(t, "ip", "netns", "add", outNS)
	sh(t, "ip", "-n", hostNS, "link", "set", "lo", "up")
	sh(t, "ip", "-n", outNS, "link", "set", "lo", "up")
	sh(t, "ip", "link", "add", "bgh"+suffix, "netns", hostNS, "type", "veth", "peer", "name", "bgo"+suffix, "netns", outNS)
	sh(t, "ip", "-n", hostNS, "addr", "add", "198.51.100.1/24", "dev", "bgh"+suffix)
	sh(t, "ip", "-n", hostNS, "link", "set", "bgh"+suffix, "up")
	sh(t, "ip", "-n", hostNS, "route", "add", "default", "via", "198.51.100.2")
	sh(t, "ip", "-n", outNS, "addr", "add", "198.51.100.2/24", "dev", "bgo"+suffix)
	sh(t, "ip", "-n", outNS, "link", "set", "bgo"+suffix, "up")

	// The outside world: a web server in its own namespace.
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", outNS, "busybox", "httpd", "-f", "-p", "9000", "-h", www)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	return hostNS
}

// fetchInNS fetches http://127.0.0.1:port/ in the network namespace ns
// until the answer holds want, for up to 15s; it returns the last answer
// and, if want never came, why.
func fetchInNS(ns string, port int, want string) ([]byte, error) {
	var out []byte
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err = exec.Command("ip", "netns", "exec", ns, "sh", "-c", httpGet("127.0.0.1", port)).CombinedOutput()
		if err == nil && strings.Contains(string(out), want) {
			return out, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("no answer holding %q in 15s", want)
	}
	return out, err
}

// assertNetnsClean checks that no banger link or nftables table is left
// in the network namespace ns.
func assertNetnsClean(t *testing.T, ns string) {
	t.Helper()
	links := sh(t, "ip", "-n", ns, "-br", "link")
	if strings.Contains(links, "banger") || strings.Contains(links, "bgtap") {
		t.Errorf("links left after rm:\n%s", links)
	}
	if tables := sh(t, "ip", "netns", "exec", ns, "nft", "list", "tables"); strings.Contains(tables, "banger") {
		t.Errorf("nftables table left: %s", tables)
	}
}

func TestBridgedNetworking(t *testing.T) {
	base := start(t)
	testutil.NeedRoot(t, "set up bridged networking")
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 is not installed")
	}
	hostNS := outsideWorld(t)

	// A banger of its own in the namespace, bridged.
	root := t.TempDir()
	run := testutil.ShortDir(t, "bgn")
	hosts := filepath.Join(root, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := newEnv(base.Bin, filepath.Join(root, "home"), run, baseConfig+"network = \"bridge\"\nhosts_file = \""+hosts+"\"\n", hostNS)
	if err != nil {
		t.Fatal(err)
	}
	w.deb, w.image = base.deb, base.image
	t.Cleanup(func() { w.StopDaemon() })
	w.Must(t, "-q", "kernel", "import", "--name", "k", w.deb)
	w.Must(t, "image", "register", "img", "--rootfs", w.image, "--kernel", "k")

	for _, name := range []string{"vma", "vmb"} {
		args := []string{"-q", "vm", "run", "img", "--name", name}
		if name == "vma" {
			args = append(args, "-p", "8088:8080")
		}
		w.Must(t, append(args, "--", "true")...)
		defer w.CLI("vm", "rm", "-f", name)
		w.Must(t, "vm", "exec", name, "--", "sh", "-c",
			"mkdir -p /www && echo served-by-"+name+" > /www/index.html && httpd -p 8080 -h /www")
	}

	t.Run("vm-to-vm-by-name", func(t *testing.T) {
		out := w.Must(t, "vm", "exec", "vma", "--", "sh", "-c", httpGet("vmb.banger", 8080))
		if !strings.Contains(out, "served-by-vmb") {
			t.Fatalf("vma -> vmb.banger: %q", out)
		}
	})
	t.Run("vm-to-host-by-name", func(t *testing.T) {
		out := w.Must(t, "vm", "exec", "vma", "--", "ping", "-c", "1", "-W", "3", "host.banger")
		if !strings.Contains(out, "1 packets received") {
			t.Fatalf("ping host.banger: %s", out)
		}
	})
	t.Run("nat-to-outside", func(t *testing.T) {
		out := w.Must(t, "vm", "exec", "vmb", "--", "sh", "-c", httpGet("198.51.100.2", 9000))
		if !strings.Contains(out, "outside") {
			t.Fatalf("vmb -> outside: %q", out)
		}
	})
	t.Run("published-port", func(t *testing.T) {
		if out, err := fetchInNS(hostNS, 8088, "served-by-vma"); err != nil {
			t.Fatalf("host -> 127.0.0.1:8088: %q, %v", out, err)
		}
	})
	t.Run("host-resolves-names", func(t *testing.T) {
		data, _ := os.ReadFile(hosts)
		for _, name := range []string{"vma.banger", "vmb.banger"} {
			if !strings.Contains(string(data), name) {
				t.Fatalf("hosts file lacks %s:\n%s", name, data)
			}
		}
		if !strings.HasPrefix(string(data), "127.0.0.1 localhost\n") {
			t.Fatalf("hosts file lost its own lines:\n%s", data)
		}
	})

	w.Must(t, "vm", "rm", "-f", "vma", "vmb")
	assertNetnsClean(t, hostNS)
	if data, _ := os.ReadFile(hosts); strings.Contains(string(data), ".banger") {
		t.Errorf("hosts lines left:\n%s", data)
	}
	w.StopDaemon()
	st, err := store.Open(context.Background(), filepath.Join(w.State, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ls, err := st.ListLeases(context.Background()); err != nil || len(ls) != 0 {
		t.Errorf("leases left: %v, %v", ls, err)
	}
	if pids := vmProcesses(w.Runtime); len(pids) > 0 {
		t.Errorf("QEMU left: %v", pids)
	}
}
