package transport

import (
	"context"
	"sync"
)

// notifier wakes every goroutine waiting on the channel of wait when notify
// is called (the channel is closed and replaced). It allocates only when
// someone waits.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// SetAppliedIndex tells the transport how far this node's state machine has
// applied the Raft log. It travels to every peer on the forwarding streams
// (at once when it grows, and with every frame). A lower index than the
// last one is ignored.
func (t *Transport) SetAppliedIndex(idx uint64) {
	for {
		cur := t.local.Load()
		if idx <= cur {
			return
		}
		if t.local.CompareAndSwap(cur, idx) {
			t.localN.notify()
			return
		}
	}
}

// PeerApplied returns the applied index peer reported last (0 if it never
// did). It comes from the peer's own frames, so it is at most one heartbeat
// interval old while the peer is reachable; it may go down when the peer
// restarts.
func (t *Transport) PeerApplied(peer string) uint64 {
	return t.applied.get(peer)
}

// WaitPeerApplied waits until peer reports an applied index of at least idx.
// It returns ctx's error when ctx ends first, ErrPeerRemoved when the peer is
// removed meanwhile, ErrClosed when the transport closes.
func (t *Transport) WaitPeerApplied(ctx context.Context, peer string, idx uint64) error {
	return t.applied.wait(ctx, peer, idx)
}

// appliedTable holds the last applied index each peer reported.
type appliedTable struct {
	mu     sync.Mutex
	m      map[string]*appliedEntry
	closed chan struct{}
	once   sync.Once
}

type appliedEntry struct {
	index uint64
	ch    chan struct{} // closed when index changes or the entry goes; nil if nobody waits
}

func (a *appliedTable) init() {
	a.m = map[string]*appliedEntry{}
	a.closed = make(chan struct{})
}

func (a *appliedTable) update(peer string, idx uint64) {
	a.mu.Lock()
	e := a.m[peer]
	if e == nil {
		e = &appliedEntry{}
		a.m[peer] = e
	}
	if e.index != idx {
		e.index = idx
		if e.ch != nil {
			close(e.ch)
			e.ch = nil
		}
	}
	a.mu.Unlock()
}

func (a *appliedTable) get(peer string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.m[peer]; e != nil {
		return e.index
	}
	return 0
}

func (a *appliedTable) remove(peer string) {
	a.mu.Lock()
	if e := a.m[peer]; e != nil {
		if e.ch != nil {
			close(e.ch)
		}
		delete(a.m, peer)
	}
	a.mu.Unlock()
}

func (a *appliedTable) close() {
	a.once.Do(func() { close(a.closed) })
}

func (a *appliedTable) wait(ctx context.Context, peer string, idx uint64) error {
	a.mu.Lock()
	e := a.m[peer]
	if e == nil {
		// Not heard of yet: wait for its first report.
		e = &appliedEntry{}
		a.m[peer] = e
	}
	for {
		if e.index >= idx {
			a.mu.Unlock()
			return nil
		}
		if e.ch == nil {
			e.ch = make(chan struct{})
		}
		ch := e.ch
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.closed:
			return ErrClosed
		case <-ch:
		}
		a.mu.Lock()
		if a.m[peer] != e {
			a.mu.Unlock()
			return ErrPeerRemoved
		}
	}
}
