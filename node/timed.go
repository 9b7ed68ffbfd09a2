package node

import (
	"sync"
	"time"
)

// timedMap remembers a value per key for keep after it was put, then
// forgets it: the entries are pruned every keep/10 as puts come, and a
// get past keep finds nothing. The zero value needs keep set.
type timedMap[K comparable, V any] struct {
	keep   time.Duration
	mu     sync.Mutex
	m      map[K]timedValue[V]
	pruned time.Time
}

type timedValue[V any] struct {
	v  V
	at time.Time
}

// put remembers v for k from now.
func (t *timedMap[K, V]) put(k K, v V) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.putLocked(k, v, time.Now())
}

// putNew is put when k is not remembered; it reports whether it put.
func (t *timedMap[K, V]) putNew(k K, v V) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[k]; ok && now.Sub(e.at) <= t.keep {
		return false
	}
	t.putLocked(k, v, now)
	return true
}

func (t *timedMap[K, V]) putLocked(k K, v V, now time.Time) {
	if t.m == nil {
		t.m = make(map[K]timedValue[V])
	}
	if now.Sub(t.pruned) > t.keep/10 {
		t.pruned = now
		for key, e := range t.m {
			if now.Sub(e.at) > t.keep {
				delete(t.m, key)
			}
		}
	}
	t.m[k] = timedValue[V]{v, now}
}

// get returns the value remembered for k.
func (t *timedMap[K, V]) get(k K) (V, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[k]
	if !ok || time.Since(e.at) > t.keep {
		var zero V
		return zero, false
	}
	return e.v, true
}

// epochs remembers an epoch per client id: the claims whose sessions
// ended here (Node.ended), or that this node made lately for connections
// (Node.live).
type epochs = timedMap[string, uint64]

// hasEpoch reports whether t remembers epoch for clientID.
func hasEpoch(t *epochs, clientID string, epoch uint64) bool {
	e, ok := t.get(clientID)
	return ok && e == epoch
}
