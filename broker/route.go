package broker

import (
	"sync"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// target is one session a message goes to, after overlapping subscriptions
// of that session were folded into one delivery.
type target struct {
	sess   *session
	qos    byte
	retain bool
	subIDs []uint32
}

type routeScratch struct {
	entries []topic.Entry[subValue]
	targets []target
	groups  []shareGroup
}

var scratchPool = sync.Pool{New: func() any { return new(routeScratch) }}

// publish stores a retained message and delivers m to every matching
// subscription on this broker.
func (s *Server) publish(m *Message) {
	s.stats.MessagesIn.Add(1)
	if m.Retain {
		s.retain(m)
	}
	s.route(m)
}

// route delivers m to the local subscribers: once per session, at the
// highest QoS of its matching subscriptions (capped by the message's QoS,
// [MQTT-3.3.4-...]) with all their subscription identifiers ([MQTT-3.3.4-3]);
// and to one member of each matching share group.
func (s *Server) route(m *Message) {
	sc := scratchPool.Get().(*routeScratch)
	sc.entries = s.subs.Match(m.Topic, sc.entries[:0])
	targets := sc.targets[:0]
	groups := sc.groups[:0]
	for i := range sc.entries {
		e := &sc.entries[i]
		if e.Group != "" {
			groups = addShareEntry(groups, e)
			continue
		}
		v := &e.Value
		// [MQTT-3.8.3-3]: No Local — never back to the publisher's own connection.
		if v.opts.NoLocal && e.Subscriber == m.Origin {
			continue
		}
		targets = foldTarget(targets, v, m)
	}
	for i := range targets {
		t := &targets[i]
		if s.acl != nil && !s.canRead(t.sess, m.Topic) {
			continue
		}
		t.sess.deliver(m, t.qos, t.retain, t.subIDs)
	}
	for i := range groups {
		s.deliverShared(&groups[i], m)
	}
	clear(sc.entries)
	clear(targets)
	clear(groups)
	sc.targets, sc.groups = targets[:0], groups[:0]
	scratchPool.Put(sc)
}

// foldTarget adds one matching subscription to the target list, merging it
// with an earlier subscription of the same session.
func foldTarget(targets []target, v *subValue, m *Message) []target {
	qos := min(m.QoS, v.opts.QoS)
	retain := v.opts.RetainAsPublished && m.Retain
	if v.sess.nsubs.Load() <= 1 {
		// One subscription cannot match twice: skip the search.
		t := target{sess: v.sess, qos: qos, retain: retain}
		if v.subID != 0 {
			t.subIDs = []uint32{v.subID}
		}
		return append(targets, t)
	}
	for i := range targets {
		t := &targets[i]
		if t.sess != v.sess {
			continue
		}
		t.qos = max(t.qos, qos)
		t.retain = t.retain || retain
		if v.subID != 0 {
			t.subIDs = append(t.subIDs, v.subID)
		}
		return targets
	}
	t := target{sess: v.sess, qos: qos, retain: retain}
	if v.subID != 0 {
		t.subIDs = []uint32{v.subID}
	}
	return append(targets, t)
}

// canRead asks the ACL whether the session's client may receive topic.
func (s *Server) canRead(ss *session, topic string) bool {
	ss.mu.Lock()
	info := ss.info
	ss.mu.Unlock()
	return s.acl.CanRead(&info, topic)
}
