// Package keylock gives one mutex per key (an image name, a VM id, a
// download destination), made on demand and dropped once nobody holds or
// waits for it. Waiting honours a context.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of per-key mutexes. The zero value is ready to use.
type Map struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders plus waiters
}

// Lock waits until key is free or ctx ends, and returns the function that
// frees it (safe to call more than once).
func (k *Map) Lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*entry{}
	}
	e := k.m[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-e.ch
				k.release(key, e)
			})
		}, nil
	case <-ctx.Done():
		k.release(key, e)
		return nil, ctx.Err()
	}
}

// MustLock is Lock without a context: it waits as long as it takes.
func (k *Map) MustLock(key string) (unlock func()) {
	u, _ := k.Lock(context.Background(), key)
	return u
}

func (k *Map) release(key string, e *entry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.m, key)
	}
}

// Users is how many callers hold or wait for key.
func (k *Map) Users(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.m[key]; e != nil {
		return e.refs
	}
	return 0
}
