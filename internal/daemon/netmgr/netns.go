package netmgr

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// runIn runs fn on an OS thread that has joined the network namespace ns,
// for the few operations that act on the calling thread's namespace rather
// than on a netlink socket's: opening /dev/net/tun and writing
// /proc/sys/net. With ns < 0 it runs fn where it is. The goroutine it starts
// is waited for; a thread whose namespace cannot be restored is never
// unlocked, so the runtime discards it with the goroutine.
func runIn(ns netns.NsHandle, fn func() error) error {
	if ns < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netmgr: cannot open the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netmgr: cannot enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("netmgr: cannot return to the original network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// setSysctl writes value to /proc/sys/<key> (key in slash form, since
// interface names may hold dots) unless it already holds it, and reports
// whether it wrote.
func setSysctl(key, value string) (bool, error) {
	path := filepath.Join("/proc/sys", key)
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("netmgr: cannot read sysctl %s: %w", key, err)
	}
	if strings.TrimSpace(string(cur)) == value {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		return false, fmt.Errorf("netmgr: cannot set sysctl %s=%s (needs root): %w", key, value, err)
	}
	return true, nil
}
