package sdnotify_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/sdnotify"
)

func TestNotifySendsDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	sent, err := sdnotify.Notify(sdnotify.Ready)
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v; want sent", sent, err)
	}
	buf := make([]byte, 64)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := pc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
}

func TestNotifyWithoutSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	sent, err := sdnotify.Notify(sdnotify.Ready)
	if sent || err != nil {
		t.Fatalf("Notify = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyMissingSocketFails(t *testing.T) {
	_, err := sdnotify.NotifySocket(filepath.Join(t.TempDir(), "absent"), sdnotify.Ready)
	if err == nil {
		t.Fatal("want an error for a socket that does not exist")
	}
}
