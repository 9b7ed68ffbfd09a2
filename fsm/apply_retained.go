package fsm

import (
	"bytes"
	"fmt"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// applyRetainedSet stores the retained message of a topic; an empty payload
// clears it, as in MQTT.
func applyRetainedSet(s *state, op *pb.RetainedSet) (kinds, error) {
	if op.GetTopic() == "" || op.GetQos() > 2 {
		return 0, fmt.Errorf("%w: retained_set needs a topic and qos <= 2", ErrInvalid)
	}
	if len(op.GetPayload()) == 0 {
		return clearRetained(s, op.GetTopic()), nil
	}
	next := &Retained{
		Topic:           op.GetTopic(),
		Payload:         op.GetPayload(),
		QoS:             byte(op.GetQos()),
		Properties:      op.GetProperties(),
		ExpiresAtUnixMs: op.GetExpiresAtUnixMs(),
		SetAtUnixMs:     op.GetSetAtUnixMs(),
	}
	if old := s.retained[next.Topic]; old != nil && sameRetained(old, next) {
		return 0, nil
	}
	s.putRetained(next)
	return KindRetained.bit(), nil
}

// applyRetainedClear removes the retained message of a topic.
func applyRetainedClear(s *state, op *pb.RetainedClear) (kinds, error) {
	if op.GetTopic() == "" {
		return 0, fmt.Errorf("%w: retained_clear needs a topic", ErrInvalid)
	}
	return clearRetained(s, op.GetTopic()), nil
}

// applyRetainedExpire removes every retained message that expires at or
// before op.NowUnixMs, the proposing leader's clock.
func applyRetainedExpire(s *state, op *pb.RetainedExpire) (kinds, error) {
	now := op.GetNowUnixMs()
	var changed kinds
	for t, at := range s.expiring { // each topic independently: order does not matter
		if at <= now {
			changed |= clearRetained(s, t)
		}
	}
	return changed, nil
}

func clearRetained(s *state, topicName string) kinds {
	if s.retained[topicName] == nil {
		return 0
	}
	delete(s.retained, topicName)
	delete(s.expiring, topicName)
	s.rtree.remove(topicName)
	return KindRetained.bit()
}

// putRetained stores r in the map and the indexes.
func (s *state) putRetained(r *Retained) {
	s.retained[r.Topic] = r
	if r.ExpiresAtUnixMs != 0 {
		s.expiring[r.Topic] = r.ExpiresAtUnixMs
	} else {
		delete(s.expiring, r.Topic)
	}
	s.rtree.set(r)
}

func sameRetained(a, b *Retained) bool {
	return a.Topic == b.Topic && bytes.Equal(a.Payload, b.Payload) && a.QoS == b.QoS &&
		bytes.Equal(a.Properties, b.Properties) && a.ExpiresAtUnixMs == b.ExpiresAtUnixMs &&
		a.SetAtUnixMs == b.SetAtUnixMs
}
