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
func applyWillSet(s *state, op *pb.WillSet) (kinds, error) {
	if op.GetWillId() == "" || op.GetNodeId() == "" || op.GetTopic() == "" || op.GetQos() > 2 {
		return 0, fmt.Errorf("%w: will_set needs will_id, node_id, topic and qos <= 2", ErrInvalid)
	}
	if s.removed(op.GetNodeId()) {
		return 0, fmt.Errorf("%w: will_set from %q", ErrNodeRemoved, op.GetNodeId())
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

// applyWillClear removes a will; a missing will is already cleared.
func applyWillClear(s *state, op *pb.WillClear) (kinds, error) {
	if op.GetWillId() == "" {
		return 0, fmt.Errorf("%w: will_clear needs will_id", ErrInvalid)
	}
	if s.wills[op.GetWillId()] == nil {
		if op.GetFire() {
			return 0, fmt.Errorf("%w: %q", ErrNoWill, op.GetWillId())
		}
		return 0, nil
	}
	delete(s.wills, op.GetWillId())
	return KindWills.bit(), nil
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
