package broker

import (
	"context"
	"sync"
)

// ShareCluster is implemented by a Cluster that balances $share groups
// across its nodes: each node tells it which groups it has members of, and
// the node a message is published on picks, per matching group, the one
// node whose members get it (Message.Shares says which groups this node
// serves).
type ShareCluster interface {
	// SetShareRoute records that this node has members local members of
	// share group group on filter (0: none left), like SetRoute.
	SetShareRoute(ctx context.Context, filter, group string, members int) error
}

// routeCounts counts this node's subscriptions per (filter, share group)
// when the broker is part of a cluster: the first one of a key makes the
// node's route, the last one ends it.
type routeCounts struct {
	mu sync.Mutex
	n  map[shareRef]int
}

// routeAdded counts a new local subscription and reports whether it is the
// first of its filter and group.
func (s *Server) routeAdded(filter, group string) bool {
	if s.cluster == nil {
		return false
	}
	rc := &s.routes
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.n == nil {
		rc.n = make(map[shareRef]int)
	}
	k := shareRef{filter: filter, group: group}
	rc.n[k]++
	return rc.n[k] == 1
}

// routeRemoved uncounts a local subscription and reports whether it was
// the last of its filter and group.
func (s *Server) routeRemoved(filter, group string) bool {
	if s.cluster == nil {
		return false
	}
	rc := &s.routes
	rc.mu.Lock()
	defer rc.mu.Unlock()
	k := shareRef{filter: filter, group: group}
	switch n := rc.n[k]; {
	case n > 1:
		rc.n[k] = n - 1
		return false
	case n == 1:
		delete(rc.n, k)
		return true
	}
	return false
}

// setRouteOf records this node's route for filter, or for a share group
// of it, within the cluster timeout.
func (s *Server) setRouteOf(filter, group string, members int) error {
	if group == "" {
		return s.setRoute(filter, members)
	}
	sc, ok := s.cluster.(ShareCluster)
	if !ok {
		return nil // the cluster keeps share groups local
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ClusterTimeout)
	defer cancel()
	return sc.SetShareRoute(ctx, filter, group, members)
}

// servesShare reports whether this node delivers m to the share group
// (filter, group): always alone; in a cluster that balances groups, when
// the node that received m from its publisher picked this node.
func (m *Message) servesShare(filter, group string) bool {
	if !m.SharesSet {
		return true
	}
	for _, r := range m.Shares {
		if r.Filter == filter && r.Group == group {
			return true
		}
	}
	return false
}

// ShareTarget names one share group: $share/{Group}/{Filter}.
type ShareTarget struct{ Filter, Group string }
