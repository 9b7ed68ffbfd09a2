package fsm

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// applyRouteSet sets the number of local subscribers node op.NodeId has for
// (op.Filter, op.Group); 0 takes the node off the route.
func applyRouteSet(s *state, op *pb.RouteSet) (kinds, error) {
	node, filter, group, members := op.GetNodeId(), op.GetFilter(), op.GetGroup(), op.GetMembers()
	if node == "" || filter == "" {
		return 0, fmt.Errorf("%w: route_set needs node_id and filter", ErrInvalid)
	}
	if group == "" && members > 1 {
		members = 1 // non-shared: present or not
	}
	if members > 0 && s.removed(node) {
		return 0, fmt.Errorf("%w: route_set from %q", ErrNodeRemoved, node)
	}
	if !s.setRoute(routeKey{filter, group}, node, members) {
		return 0, nil
	}
	return KindRoutes.bit(), nil
}

// setRoute sets node's members on the route key and reports whether that
// changed anything. It keeps the route map, the trie and routesOf in step.
func (s *state) setRoute(key routeKey, node string, members uint32) bool {
	old := s.routes[key]
	var nodes []RouteNode
	if old != nil {
		key = routeKey{old.Filter, old.Group} // keep one copy of the strings
		nodes = old.Nodes
	}
	i, found := slices.BinarySearchFunc(nodes, node, func(n RouteNode, id string) int {
		return strings.Compare(n.NodeID, id)
	})
	switch {
	case found && members == nodes[i].Members, !found && members == 0:
		return false
	case found && members == 0:
		nodes = slices.Delete(slices.Clone(nodes), i, i+1)
	case found:
		nodes = slices.Clone(nodes)
		nodes[i].Members = members
	default:
		nodes = slices.Insert(slices.Clip(nodes), i, RouteNode{NodeID: node, Members: members})
	}
	if found {
		node = old.Nodes[i].NodeID
	}

	if len(nodes) == 0 {
		delete(s.routes, key)
	} else {
		s.routes[key] = &Route{Filter: key.filter, Group: key.group, Nodes: nodes}
	}
	if members == 0 {
		s.trie.Remove(key.filter, key.group, node)
		if set := s.routesOf[node]; set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(s.routesOf, node)
			}
		}
	} else {
		s.trie.Add(key.filter, key.group, node, members)
		set := s.routesOf[node]
		if set == nil {
			set = map[routeKey]struct{}{}
			s.routesOf[node] = set
		}
		set[key] = struct{}{}
	}
	return true
}

// dropRoutesOf takes node off every route it is on.
func (s *state) dropRoutesOf(node string) bool {
	set := s.routesOf[node]
	keys := make([]routeKey, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	for _, k := range keys { // order does not matter: each key is independent
		s.setRoute(k, node, 0)
	}
	return len(keys) > 0
}
