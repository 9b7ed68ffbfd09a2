package fsm

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// The queries read the applied state of this replica; any goroutine may
// call them at any time. They take the read lock (MatchRoutes only the
// route trie's) and return copies, except for payload and property bytes,
// which are shared and must not be modified. Lists come sorted by key.

// MatchRoutes appends to dst one RouteMatch per (node, filter, group) whose
// filter matches the topic name, and returns the extended slice. The caller
// forwards a message once per node, and for a shared group picks one node,
// weighing by Members. The order is unspecified.
//
// It is the publish path's query: it allocates nothing beyond growing dst
// and takes only the route trie's read lock, so it sees each RouteSet
// whole but may see a NodeRemove half done.
func (f *FSM) MatchRoutes(topicName string, dst []RouteMatch) []RouteMatch {
	sp, _ := f.scratch.Get().(*[]topic.Entry[uint32])
	if sp == nil {
		sp = new([]topic.Entry[uint32])
	}
	entries := f.st.Load().trie.Match(topicName, (*sp)[:0])
	for _, e := range entries {
		dst = append(dst, RouteMatch{NodeID: e.Subscriber, Filter: e.Filter, Group: e.Group, Members: e.Value})
	}
	clear(entries)
	*sp = entries[:0]
	f.scratch.Put(sp)
	return dst
}

// Route returns the nodes with subscribers for (filter, group).
func (f *FSM) Route(filter, group string) (Route, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.st.Load().routes[routeKey{filter, group}]
	if r == nil {
		return Route{}, false
	}
	return Route{Filter: r.Filter, Group: r.Group, Nodes: slices.Clone(r.Nodes)}, true
}

// RoutesOf returns the routes node is on, with only node's share in Nodes:
// what the cluster believes node's local subscribers are (the node compares
// it with its own after a restart and proposes the difference).
func (f *FSM) RoutesOf(node string) []Route {
	f.mu.RLock()
	st := f.st.Load()
	out := make([]Route, 0, len(st.routesOf[node]))
	for k := range st.routesOf[node] {
		r := st.routes[k]
		i, _ := slices.BinarySearchFunc(r.Nodes, node, func(n RouteNode, id string) int { return strings.Compare(n.NodeID, id) })
		out = append(out, Route{Filter: r.Filter, Group: r.Group, Nodes: []RouteNode{r.Nodes[i]}})
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(strings.Compare(a.Filter, b.Filter), strings.Compare(a.Group, b.Group))
	})
	return out
}

// Session returns the persistent session of clientID.
func (f *FSM) Session(clientID string) (Session, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.st.Load().sessions[clientID]
	if s == nil {
		return Session{}, false
	}
	return copySession(s), true
}

// Sessions returns every persistent session, sorted by client id.
func (f *FSM) Sessions() []Session {
	f.mu.RLock()
	st := f.st.Load()
	out := make([]Session, 0, len(st.sessions))
	for _, s := range st.sessions {
		out = append(out, copySession(s))
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Session) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// SessionHolders returns the holders of every session that has some, by
// client id (see Session.Holders).
func (f *FSM) SessionHolders() map[string][]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out map[string][]string
	for id, s := range f.st.Load().sessions {
		if len(s.Holders) > 0 {
			if out == nil {
				out = make(map[string][]string)
			}
			out[id] = slices.Clone(s.Holders)
		}
	}
	return out
}

// NextEpoch returns an epoch for a new SessionClaim: above every epoch this
// replica has seen accepted, for any client, so that epochs of one client id
// keep growing even across the deletion of its session.
func (f *FSM) NextEpoch() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Load().maxEpoch + 1
}

func copySession(s *Session) Session {
	c := *s
	c.Subscriptions = slices.Clone(s.Subscriptions)
	c.Holders = slices.Clone(s.Holders)
	return c
}

// Will returns the will registered as id.
func (f *FSM) Will(id string) (Will, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	w := f.st.Load().wills[id]
	if w == nil {
		return Will{}, false
	}
	return *w, true
}

// Wills returns every registered will, sorted by id.
func (f *FSM) Wills() []Will { return f.wills(func(*Will) bool { return true }) }

// WillsOf returns the wills of the connections node holds, sorted by id:
// what the leader publishes when node is confirmed down.
func (f *FSM) WillsOf(node string) []Will {
	return f.wills(func(w *Will) bool { return w.NodeID == node })
}

func (f *FSM) wills(keep func(*Will) bool) []Will {
	f.mu.RLock()
	var out []Will
	for _, w := range f.st.Load().wills {
		if keep(w) {
			out = append(out, *w)
		}
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Will) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Retained returns the retained message of a topic name. It does not look
// at the clock: a message past its expiry stays until RetainedExpire, and
// the caller checks ExpiresAtUnixMs.
func (f *FSM) Retained(topicName string) (Retained, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.st.Load().retained[topicName]
	if r == nil {
		return Retained{}, false
	}
	return *r, true
}

// RetainedMatching returns the retained messages whose topics match filter
// (the filter proper, without $share/{group}/), sorted by topic, by the
// rules of topic.Match. It walks only the branches of the topic tree that
// the filter allows.
func (f *FSM) RetainedMatching(filter string) []Retained {
	f.mu.RLock()
	ptrs := f.st.Load().rtree.match(filter, nil)
	out := make([]Retained, len(ptrs))
	for i, p := range ptrs {
		out[i] = *p
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Retained) int { return strings.Compare(a.Topic, b.Topic) })
	return out
}

// Node returns the record of a node that is down or removed; a node that
// is up has none (ok false, State NodeUp).
func (f *FSM) Node(id string) (Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.st.Load().nodes[id]
	if !ok {
		return Node{ID: id}, false
	}
	return n, true
}

// Nodes returns every node that is down or removed, sorted by id.
func (f *FSM) Nodes() []Node {
	f.mu.RLock()
	st := f.st.Load()
	out := make([]Node, 0, len(st.nodes))
	for _, n := range st.nodes {
		out = append(out, n)
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// AppliedIndex returns the Raft index of the last entry applied (or of the
// snapshot restored last). Only command entries reach the FSM, so it may
// lag the Raft applied index by no-op and configuration entries.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied returns nil once AppliedIndex is at least index, ctx.Err() if
// ctx ends first, and the *FatalError if the FSM halts first.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := f.changed[KindAny].wait() // before the check: no wake-up is lost
		if f.applied.Load() >= index {
			return nil
		}
		if err := f.Err(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-f.halted:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats counts what the state holds, and what Apply did since start.
type Stats struct {
	AppliedIndex uint64
	Routes       int // (filter, group) pairs with at least one node
	RouteEntries int // (filter, group, node) triples
	Sessions     int
	Connected    int // sessions whose owner has a live connection
	Wills        int
	Retained     int
	Expiring     int // retained messages with an expiry
	NodesDown    int
	NodesRemoved int
	MaxEpoch     uint64

	Ignored  uint64 // unknown ops skipped because they were ignorable
	Rejected uint64 // commands rejected (invalid, stale epoch, ...)
	Restores uint64 // snapshots restored
	Halted   bool
}

// Stats returns the current counts. It walks the sessions and nodes (to
// count the connected and the down); call it for metrics, not per message.
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	st := f.st.Load()
	s := Stats{
		AppliedIndex: f.applied.Load(),
		Routes:       len(st.routes),
		RouteEntries: st.trie.Len(),
		Sessions:     len(st.sessions),
		Wills:        len(st.wills),
		Retained:     len(st.retained),
		Expiring:     len(st.expiring),
		MaxEpoch:     st.maxEpoch,
	}
	for _, v := range st.sessions {
		if v.Connected {
			s.Connected++
		}
	}
	for _, n := range st.nodes {
		switch n.State {
		case NodeDown:
			s.NodesDown++
		case NodeRemoved:
			s.NodesRemoved++
		}
	}
	f.mu.RUnlock()
	s.Ignored, s.Rejected, s.Restores = f.ignored.Load(), f.rejected.Load(), f.restores.Load()
	s.Halted = f.fatal.Load() != nil
	return s
}

// RetainedExpiredBy reports whether some retained message's expiry is at
// or before nowMs: the leader then proposes RetainedExpire. It walks the
// retained messages that have an expiry.
func (f *FSM) RetainedExpiredBy(nowMs int64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, at := range f.st.Load().expiring {
		if at <= nowMs {
			return true
		}
	}
	return false
}

// RetainedCount is the number of retained messages in the replicated set.
func (f *FSM) RetainedCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.st.Load().retained)
}

// DownCount is how many times this replica has applied a NodeDown that
// marked node id down. A node compares its own count to learn that the
// cluster took it for dead while it could not tell (a partition, a pause).
func (f *FSM) DownCount(id string) uint64 {
	if v, ok := f.downs.Load(id); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}
