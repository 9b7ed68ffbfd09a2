package broker

import (
	"sync"

	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// target is one session a message goes to, after overlapping subscriptions
// of that session were folded into one delivery.
type target struct {
	sess   *session
	qos    byte
	retain bool
	subIDs []uint32
	share  *shareRef
}

// prepared is a delivery between prepare and place.
type prepared struct {
	sess *session
	o    outMsg
}

type routeScratch struct {
	entries []topic.Entry[subValue]
	targets []target
	groups  []shareGroup
	preps   []prepared
	ops     []StoreOp
}

var scratchPool = sync.Pool{New: func() any { return new(routeScratch) }}

// publish routes m to every matching subscription on this broker and stores
// it as retained when it asks to be. from is the publishing connection (nil
// for wills); extra are store writes that must be durable together with the
// message (the publisher's QoS 2 state); ack runs once everything is durable
// and the message is in every subscriber's queue — the publisher's PUBACK or
// PUBREC is sent from it.
func (s *Server) publish(m *Message, from *conn, extra []StoreOp, ack ackTo) {
	s.stats.MessagesIn.Add(1)
	if m.ID == 0 {
		m.ID = s.msgIDs.Add(1)
	}
	retainHere := m.Retain
	if m.Retain && s.cluster != nil {
		// The replicated set, not this node, keeps it.
		retainHere = false
		if code := s.retainInCluster(m); code != packet.Success && from != nil {
			if from.version < packet.V5 && m.QoS > 0 {
				// 3.1.1 cannot say "not retained" in a PUBACK/PUBREC:
				// rather than acknowledge what the cluster did not record,
				// close the connection; the client sends it again
				// ([MQTT-3.3.5-2] allows closing instead of acknowledging).
				if m.QoS == 2 {
					// Not received after all: the resent PUBLISH must be
					// taken as new.
					ss := from.sess
					ss.mu.Lock()
					delete(ss.awaitingRel, ack.id)
					ss.mu.Unlock()
				}
				from.closeNow()
				return
			}
			if from.version == packet.V5 {
				ack.code = code
			}
		}
	}
	ack = s.forward(m, ack)
	if retainHere && s.store != nil {
		extra = append(extra, retainedOp(m))
	}
	s.routeLocal(m, from, extra, ack, retainHere)
}

// routeLocal delivers m to the matching subscriptions of this node.
func (s *Server) routeLocal(m *Message, from *conn, extra []StoreOp, ack ackTo, retain bool) {
	if s.moved.n.Load() > 0 {
		ack = s.passOn(m, ack)
	}
	sc := scratchPool.Get().(*routeScratch)
	sc.entries = s.subs.Match(m.Topic, sc.entries[:0])
	targets := sc.targets[:0]
	groups := sc.groups[:0]
	for i := range sc.entries {
		e := &sc.entries[i]
		if e.Group != "" {
			if m.servesShare(e.Filter, e.Group) {
				groups = addShareEntry(groups, e)
			}
			continue
		}
		if m.SharedOnly {
			continue
		}
		v := &e.Value
		// [MQTT-3.8.3-3]: No Local — never back to the publisher itself.
		if v.opts.NoLocal && e.Subscriber == m.Origin {
			continue
		}
		if s.acl != nil && !s.canRead(v.sess, m.Topic) {
			continue
		}
		targets = foldTarget(targets, v, m)
	}
	for i := range groups {
		if t, ok := s.pickShared(&groups[i], m); ok {
			targets = append(targets, t)
		}
	}
	s.dispatch(m, targets, from, extra, ack, retain, sc)
	clear(sc.entries)
	clear(targets)
	clear(groups)
	sc.targets, sc.groups = targets[:0], groups[:0]
	scratchPool.Put(sc)
}

// dispatch delivers m to targets in two steps: prepare every delivery
// (packet ids, store records), make the store writes durable, then place
// the deliveries into the sessions (and m into the retained set when
// retain is set) and send ack. Without store writes (no persistent
// subscriber, no retained change, no QoS 2 state) it all happens at once.
func (s *Server) dispatch(m *Message, targets []target, from *conn, extra []StoreOp, ack ackTo, retain bool, sc *routeScratch) {
	preps := sc.preps[:0]
	ops := append(sc.ops[:0], extra...)
	for i := range targets {
		t := &targets[i]
		o := outMsg{msg: m, qos: t.qos, retain: t.retain, subIDs: t.subIDs, share: t.share}
		op, write, ok := t.sess.prepare(&o)
		if write {
			ops = append(ops, op) // also for a delivery held back (importing)
		}
		if !ok {
			continue
		}
		preps = append(preps, prepared{sess: t.sess, o: o})
	}
	if s.store == nil || len(ops) == 0 && (from == nil || from.pending.Load() == 0) {
		s.place(m, preps, ack, retain, from)
		clear(preps)
		sc.preps, sc.ops = preps[:0], ops[:0]
		return
	}
	own := append([]prepared(nil), preps...)
	writes := append([]StoreOp(nil), ops...)
	clear(preps)
	clear(ops)
	sc.preps, sc.ops = preps[:0], ops[:0]
	done := func() { s.place(m, own, ack, retain, nil) }
	if from != nil {
		from.afterDurable(writes, done)
		return
	}
	s.commit(writes, done)
}

// place is the second step of dispatch.
// kicker is the connection whose reader goroutine runs this, or nil.
func (s *Server) place(m *Message, preps []prepared, ack ackTo, retain bool, kicker *conn) {
	if retain {
		s.retainInMemory(m)
	}
	var late []passOut
	for i := range preps {
		ss := preps[i].sess
		if ss.place(preps[i].o, kicker) {
			continue
		}
		// The session moved to another node between the two steps (the
		// second step of its move took what it held): the message
		// follows it there.
		if owner, ok := s.movedTo(ss.id); ok {
			o := &preps[i].o
			late = append(late, passOut{owner, ss.id, SessionDelivery{Msg: m, QoS: o.qos, Retain: o.retain, SubIDs: o.subIDs}})
		}
	}
	if len(late) > 0 {
		if sc := s.sessionCluster(); sc != nil {
			ack = s.passOnAll(sc, late, ack)
		}
	}
	ack.send(kicker)
}

// ackTo is the acknowledgement a publisher is owed once its message is
// routed: PUBACK or PUBREC with the packet id, or nothing (zero value).
type ackTo struct {
	c     *conn
	t     packet.Type
	id    uint16
	code  packet.ReasonCode // the acknowledgement's reason code (5.0)
	join  *joinAcks         // set: the acknowledgement also waits for other nodes
	done  chan struct{}     // set: closed instead (a forwarded message is placed)
	batch *placedBatch      // set: counted instead (a forwarded batch is placed)
}

func (a ackTo) send(kicker *conn) {
	switch {
	case a.batch != nil:
		a.batch.placed()
	case a.done != nil:
		close(a.done)
	case a.join != nil:
		a.join.done()
	case a.c == nil:
	case kicker != nil:
		a.c.enqueueFrom(kicker, outItem{ack: a.t, id: a.id, code: a.code})
	default:
		a.c.enqueueAck(a.t, a.id, a.code)
	}
}

// foldTarget adds one matching subscription to the target list, merging it
// with an earlier subscription of the same session: one copy at the highest
// QoS ([MQTT-3.3.4-2]) with every subscription identifier ([MQTT-3.3.4-3]).
func foldTarget(targets []target, v *subValue, m *Message) []target {
	qos := min(m.QoS, v.opts.QoS)
	retain := v.opts.RetainAsPublished && m.Retain
	if v.sess.nsubs.Load() > 1 {
		for i := range targets {
			t := &targets[i]
			if t.sess != v.sess || t.share != nil {
				continue
			}
			t.qos = max(t.qos, qos)
			t.retain = t.retain || retain
			if v.subID != 0 {
				t.subIDs = append(t.subIDs, v.subID)
			}
			return targets
		}
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
