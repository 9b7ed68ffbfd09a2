package broker

import (
	"context"
	"sync"
	"time"
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

// routeWanted reports whether a local subscription needs the route of
// filter and group.
func (s *Server) routeWanted(filter, group string) bool {
	rc := &s.routes
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n[shareRef{filter: filter, group: group}] > 0
}

// keepRouting records the route of filter and group in the background
// after an attempt failed while a local subscription stays (a session
// arrived while the cluster had no quorum): until the route is recorded,
// no other node sends its messages here, and a publisher elsewhere is
// acknowledged for a subscriber it never reached. It stops once the route
// is recorded, once no local subscription needs it, or when the server
// closes.
func (s *Server) keepRouting(filter, group string) {
	go func() {
		wait := 200 * time.Millisecond
		for {
			time.Sleep(wait)
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || !s.routeWanted(filter, group) {
				return
			}
			if err := s.setRouteOf(filter, group, 1); err != nil {
				wait = min(2*wait, 5*time.Second)
				continue
			}
			s.log.Info("route recorded after a failed attempt", "topic", filter, "group", group)
			if !s.routeWanted(filter, group) {
				// The last subscription went meanwhile: its removal may
				// have been recorded before this.
				s.setRouteOf(filter, group, 0)
			}
			return
		}
	}()
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
