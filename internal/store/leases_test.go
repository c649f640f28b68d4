package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// firstFree picks the lowest free host address of 10.200.0.0/24 after .1.
func firstFree(used []netip.Addr) (netip.Addr, error) {
	taken := map[netip.Addr]bool{}
	for _, u := range used {
		taken[u] = true
	}
	a := netip.MustParseAddr("10.200.0.2")
	for i := 0; i < 253; i++ {
		if !taken[a] {
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, errors.New("subnet full")
}

func TestLeasesUniqueUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "banger.db"), allMigrations(t))
	now := time.Now()
	if err := s.PutKernel(ctx, Kernel{ID: "k", Name: "k", VmlinuxPath: "/v", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, Image{ID: "i", Name: "i", RootfsPath: "/r", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		if err := s.PutVM(ctx, VM{ID: fmt.Sprint("vm", i), Name: fmt.Sprint("vm", i), ImageID: "i", KernelID: "k", VCPUs: 1, MemoryBytes: 1, DiskBytes: 1, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	addrs := make([]netip.Addr, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.AcquireLease(ctx, fmt.Sprint("vm", i), firstFree)
			if err != nil {
				t.Error(err)
			}
			addrs[i] = a
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s leased twice: %v", a, addrs)
		}
		seen[a] = true
	}
	// Asking again returns the same address.
	again, err := s.AcquireLease(ctx, "vm7", func([]netip.Addr) (netip.Addr, error) { return netip.Addr{}, errors.New("must not pick") })
	if err != nil || again != addrs[7] {
		t.Fatalf("second acquire = %v, %v; want %v", again, err, addrs[7])
	}
	if err := s.ReleaseLease(ctx, "vm7"); err != nil {
		t.Fatal(err)
	}
	ls, _ := s.ListLeases(ctx)
	if len(ls) != n-1 {
		t.Fatalf("%d leases after one release, want %d", len(ls), n-1)
	}
	// Removing a VM drops its lease.
	if err := s.DeleteVM(ctx, "vm8"); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.ListLeases(ctx); len(ls) != n-2 {
		t.Fatalf("%d leases after a VM was deleted, want %d", len(ls), n-2)
	}
}
