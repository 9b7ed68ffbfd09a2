package fsm

import (
	"fmt"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// applyNodeDown records a confirmed failure of a node. Its routes, wills and
// sessions stay until NodeRemove; a removed node stays removed.
func applyNodeDown(s *state, op *pb.NodeDown) (kinds, error) {
	id := op.GetNodeId()
	if id == "" {
		return 0, fmt.Errorf("%w: node_down needs node_id", ErrInvalid)
	}
	next := Node{ID: id, State: NodeDown, DownAtUnixMs: op.GetAtUnixMs()}
	if old, ok := s.nodes[id]; ok && (old == next || old.State == NodeRemoved) {
		return 0, nil
	}
	s.nodes[id] = next
	return KindNodes.bit(), nil
}

// applyNodeUp forgets that a node was down or removed.
func applyNodeUp(s *state, op *pb.NodeUp) (kinds, error) {
	id := op.GetNodeId()
	if id == "" {
		return 0, fmt.Errorf("%w: node_up needs node_id", ErrInvalid)
	}
	if _, ok := s.nodes[id]; !ok {
		return 0, nil
	}
	delete(s.nodes, id)
	return KindNodes.bit(), nil
}

// applyNodeRemove cleans up after a node that left the cluster for good: its
// routes and wills go, the sessions it owned lose their owner (the epoch
// stays, so a new claim must still be above it), and it is recorded as
// removed so that late commands from it are rejected.
func applyNodeRemove(s *state, op *pb.NodeRemove) (kinds, error) {
	id := op.GetNodeId()
	if id == "" {
		return 0, fmt.Errorf("%w: node_remove needs node_id", ErrInvalid)
	}
	old, known := s.nodes[id]
	at := op.GetAtUnixMs()
	if at == 0 {
		at = old.DownAtUnixMs
	}
	var changed kinds
	if s.dropRoutesOf(id) {
		changed |= KindRoutes.bit()
	}
	if s.dropWillsOf(id) {
		changed |= KindWills.bit()
	}
	if s.releaseSessionsOf(id, at) {
		changed |= KindSessions.bit()
	}
	if !known || old.State != NodeRemoved {
		s.nodes[id] = Node{ID: id, State: NodeRemoved, DownAtUnixMs: old.DownAtUnixMs}
		changed |= KindNodes.bit()
	}
	return changed, nil
}
