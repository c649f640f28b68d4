package keylock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/keylock"
)

func TestOneHolderPerKey(t *testing.T) {
	var m keylock.Map
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := m.MustLock("a")
			defer unlock()
			n := inside.Add(1)
			for {
				old := maxInside.Load()
				if n <= old || maxInside.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders of one key at once", maxInside.Load())
	}
	// Another key is independent of a held one.
	unlock := m.MustLock("a")
	defer unlock()
	u2, err := m.Lock(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	u2()
	u2() // twice is harmless
}

func TestWaitHonoursContext(t *testing.T) {
	var m keylock.Map
	unlock := m.MustLock("k")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Lock(ctx, "k"); err == nil {
		t.Fatal("Lock of a held key returned before its context ended")
	}
	if n := m.Users("k"); n != 1 {
		t.Fatalf("%d users after a waiter gave up, want 1", n)
	}
	unlock()
	if n := m.Users("k"); n != 0 {
		t.Fatalf("%d users after release, want 0 (entry not dropped)", n)
	}
	u, err := m.Lock(context.Background(), "k")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	u()
}
