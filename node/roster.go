package node

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
)

// roster is this node's copy of what gossip says about the members. It is
// fed by memberlist's events, which carry the node while memberlist holds
// its lock, so reading the roster never races with memberlist updating its
// own records (which Members() would hand out).
type roster struct {
	mu sync.Mutex
	m  map[string]rosterEntry
}

type rosterEntry struct {
	gossip string // host:port of its memberlist listener
	meta   meta
	alive  bool // joined and not declared dead or left
}

func (r *roster) NotifyJoin(n *memberlist.Node)   { r.set(n, true) }
func (r *roster) NotifyUpdate(n *memberlist.Node) { r.set(n, true) }
func (r *roster) NotifyLeave(n *memberlist.Node)  { r.set(n, false) }

func (r *roster) set(n *memberlist.Node, alive bool) {
	e := rosterEntry{gossip: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), alive: alive}
	_ = json.Unmarshal(n.Meta, &e.meta)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]rosterEntry{}
	}
	if !alive {
		if old, ok := r.m[n.Name]; ok && e.meta.Raft == "" {
			e.meta = old.meta
		}
	}
	r.m[n.Name] = e
}

// alive returns the live members, sorted by id.
func (r *roster) aliveMembers() []member {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []member
	for id, e := range r.m {
		if e.alive && e.meta.Raft != "" {
			out = append(out, member{id: id, raft: e.meta.Raft, grpc: e.meta.GRPC, run: e.meta.Run})
		}
	}
	slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.id, b.id) })
	return out
}

// known reports whether gossip ever announced id.
func (r *roster) known(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[id]
	return ok
}

// lost returns the gossip addresses of members that are not alive.
func (r *roster) lost(self string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for id, e := range r.m {
		if !e.alive && id != self {
			out[id] = e.gossip
		}
	}
	return out
}

// forget drops a member (removed from the cluster for good).
func (r *roster) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, id)
}

// entries returns a copy of the roster.
func (r *roster) entries() map[string]rosterEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]rosterEntry, len(r.m))
	for id, e := range r.m {
		out[id] = e
	}
	return out
}
