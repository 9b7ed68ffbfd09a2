package fsm

import (
	"bytes"
	"fmt"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// applyWillSet registers or replaces the will of one connection. A node
// recorded as down that registers a will is back (a pause, a partition):
// its record goes, as with NodeUp, so that the leader does not publish the
// will of a connection it accepted since, which is alive.
// A will fired lately is not registered again: its registration was
// retried after it had landed, and it must not be published twice.
func applyWillSet(s *state, index uint64, op *pb.WillSet) (kinds, error) {
	if op.GetWillId() == "" || op.GetNodeId() == "" || op.GetTopic() == "" || op.GetQos() > 2 {
		return 0, fmt.Errorf("%w: will_set needs will_id, node_id, topic and qos <= 2", ErrInvalid)
	}
	if s.removed(op.GetNodeId()) {
		return 0, fmt.Errorf("%w: will_set from %q", ErrNodeRemoved, op.GetNodeId())
	}
	s.pruneFired(index)
	if _, ok := s.fired[op.GetWillId()]; ok {
		return 0, fmt.Errorf("%w: %q", ErrWillFired, op.GetWillId())
	}
	next := &Will{
		ID:                   op.GetWillId(),
		ClientID:             op.GetClientId(),
		NodeID:               op.GetNodeId(),
		DelaySeconds:         op.GetDelaySeconds(),
		SessionExpirySeconds: op.GetSessionExpirySeconds(),
		Topic:                op.GetTopic(),
		Payload:              op.GetPayload(),
		QoS:                  byte(op.GetQos()),
		Retain:               op.GetRetain(),
		Properties:           op.GetProperties(),
	}
	var k kinds
	if nd, ok := s.nodes[next.NodeID]; ok && nd.State == NodeDown {
		delete(s.nodes, next.NodeID)
		k |= KindNodes.bit()
	}
	if old := s.wills[next.ID]; old != nil && sameWill(old, next) {
		return k, nil
	}
	s.wills[next.ID] = next
	return k | KindWills.bit(), nil
}

// firedKeep is for how many log entries a fired will is remembered: long
// enough for the node that held its connection to come back from a
// partition and ask (ClaimWill), bounded so that the record does not grow
// with every will ever published.
const firedKeep = 1 << 16

// applyWillClear removes a will; a missing will is already cleared. With
// fire set, it claims the will for publication: the fire is remembered,
// and a second claim is rejected with ErrWillFired (ErrNoWill when the
// will was never registered, or cleared without fire).
func applyWillClear(s *state, index uint64, op *pb.WillClear) (kinds, error) {
	id := op.GetWillId()
	if id == "" {
		return 0, fmt.Errorf("%w: will_clear needs will_id", ErrInvalid)
	}
	s.pruneFired(index)
	if s.wills[id] == nil {
		if !op.GetFire() {
			return 0, nil
		}
		if _, ok := s.fired[id]; ok {
			return 0, fmt.Errorf("%w: %q", ErrWillFired, id)
		}
		return 0, fmt.Errorf("%w: %q", ErrNoWill, id)
	}
	delete(s.wills, id)
	if op.GetFire() {
		s.fired[id] = index
		s.firedOrder = append(s.firedOrder, id)
	}
	return KindWills.bit(), nil
}

// pruneFired forgets the wills fired more than firedKeep entries before
// index.
func (s *state) pruneFired(index uint64) {
	for len(s.firedOrder) > 0 {
		id := s.firedOrder[0]
		if s.fired[id]+firedKeep > index {
			return
		}
		delete(s.fired, id)
		s.firedOrder[0] = ""
		s.firedOrder = s.firedOrder[1:]
	}
}

// dropWillsOf removes the wills of the connections node held.
func (s *state) dropWillsOf(node string) bool {
	changed := false
	for id, w := range s.wills { // each will independently: order does not matter
		if w.NodeID == node {
			delete(s.wills, id)
			changed = true
		}
	}
	return changed
}

func sameWill(a, b *Will) bool {
	return a.ID == b.ID && a.ClientID == b.ClientID && a.NodeID == b.NodeID &&
		a.DelaySeconds == b.DelaySeconds && a.SessionExpirySeconds == b.SessionExpirySeconds &&
		a.Topic == b.Topic && bytes.Equal(a.Payload, b.Payload) && a.QoS == b.QoS &&
		a.Retain == b.Retain && bytes.Equal(a.Properties, b.Properties)
}
