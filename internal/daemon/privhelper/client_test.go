package privhelper_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/daemon/privhelper"
)

func bounded(t *testing.T) context.Context {
	// A bound only so that a broken helper fails the test instead of
	// hanging it.
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// fakeHelper answers one request on a socket with answer and returns the
// request it got.
func fakeHelper(t *testing.T, answer string) (string, <-chan privhelper.Request) {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "fake.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan privhelper.Request, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer c.Close()
		var r privhelper.Request
		_ = json.NewDecoder(io.LimitReader(c, privhelper.MaxRequest)).Decode(&r)
		got <- r
		_, _ = io.WriteString(c, answer+"\n")
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return sock, got
}

// TestHelloRefusesAnotherProtocol: the client refuses a helper whose hello
// names another protocol (as a helper of another build answers).
func TestHelloRefusesAnotherProtocol(t *testing.T) {
	sock, got := fakeHelper(t, `{"ok":true,"version":"0.3.0","protocol":1}`)
	v, err := privhelper.Client{Socket: sock}.Hello(bounded(t))
	if err == nil || !strings.Contains(err.Error(), "speaks protocol 1, this bangerd "+strconv.Itoa(privhelper.ProtocolVersion)) ||
		!strings.Contains(err.Error(), "restart banger-helper.service") {
		t.Fatalf("Hello to a protocol 1 helper = %+v, %v; want a refusal that says what to do", v, err)
	}
	if v.Version != "0.3.0" {
		t.Errorf("Hello returned version %q, want the helper's 0.3.0", v.Version)
	}
	if r := <-got; r.Op != privhelper.OpHello || r.Version != privhelper.ProtocolVersion {
		t.Errorf("the client sent %+v", r)
	}
}

func TestClientReportsAnUnreachableHelper(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := privhelper.Client{Socket: sock}.Hello(bounded(t))
	if err == nil || !strings.Contains(err.Error(), "reach the banger helper on "+sock) || !strings.Contains(err.Error(), "banger-helper.service") {
		t.Fatalf("Hello with no helper: %v", err)
	}
}

func TestClientRefusesABadCreateAnswer(t *testing.T) {
	sock, _ := fakeHelper(t, `{"ok":true}`)
	_, err := privhelper.Client{Socket: sock}.CreateSnapshot(bounded(t), "banger-a", "/o", "/c", 8<<20)
	if err == nil || !strings.Contains(err.Error(), "with 0 snapshots, not 1") {
		t.Fatalf("CreateSnapshot with an empty answer: %v", err)
	}
}
