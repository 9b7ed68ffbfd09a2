package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// Pass-on: a node that let a session go to another node may still receive
// messages for it for a while — the other nodes route by their copy of the
// cluster's state, and a node cut off from the leader (a partition, a slow
// link) keeps sending to the node the session left. That node keeps the
// session's subscriptions for passOnTime and passes such messages on to the
// new owner, addressed to the session; the publisher's acknowledgement
// waits for the new owner to place them. The owner meets the ones it has
// already delivered or holds once, by (node, id).

// movedSession is what is left of a session that moved to owner.
type movedSession struct {
	owner string
	subs  []Subscription // not shared: a share group re-routes on its own
	until time.Time
}

// movedSessions are the sessions that left this node lately, by client id.
type movedSessions struct {
	n  atomic.Int32 // len(m), read on every publish
	mu sync.Mutex
	m  map[string]*movedSession
}

// PassOnFor keeps passing on, for d, the messages that reach this node for
// the session of clientID, which moved to owner with subs.
func (s *Server) PassOnFor(clientID, owner string, subs []Subscription, d time.Duration) {
	var own []Subscription
	for _, sub := range subs {
		if sub.Group == "" {
			own = append(own, sub)
		}
	}
	if len(own) == 0 || owner == "" {
		return
	}
	ms := &s.moved
	ms.mu.Lock()
	if ms.m == nil {
		ms.m = make(map[string]*movedSession)
	}
	ms.m[clientID] = &movedSession{owner: owner, subs: own, until: time.Now().Add(d)}
	ms.n.Store(int32(len(ms.m)))
	ms.mu.Unlock()
}

// movedTo returns where the session of clientID moved, if it left lately
// and is not back.
func (s *Server) movedTo(clientID string) (string, bool) {
	if s.moved.n.Load() == 0 {
		return "", false
	}
	s.mu.Lock()
	_, back := s.sessions[clientID]
	s.mu.Unlock()
	ms := &s.moved
	ms.mu.Lock()
	defer ms.mu.Unlock()
	mv := ms.m[clientID]
	if mv == nil || back || time.Now().After(mv.until) {
		return "", false
	}
	return mv.owner, true
}

// passOn sends m to the moved sessions whose subscriptions match it, and
// returns the acknowledgement to use instead of ack: it also waits for
// them.
func (s *Server) passOn(m *Message, ack ackTo) ackTo {
	sc := s.sessionCluster()
	if sc == nil || m.SharedOnly {
		return ack
	}
	var outs []passOut
	now := time.Now()
	ms := &s.moved
	ms.mu.Lock()
	for id, mv := range ms.m {
		if now.After(mv.until) {
			delete(ms.m, id)
			continue
		}
		d := SessionDelivery{Msg: m}
		matched := false
		for _, sub := range mv.subs {
			if !topic.Match(sub.Real, m.Topic) || sub.Opts.NoLocal && id == m.Origin {
				continue
			}
			// One copy at the highest QoS, as foldTarget does.
			if !matched || sub.Opts.QoS > d.QoS {
				d.QoS = min(m.QoS, sub.Opts.QoS)
			}
			d.Retain = d.Retain || sub.Opts.RetainAsPublished && m.Retain
			if sub.SubID != 0 {
				d.SubIDs = append(d.SubIDs, sub.SubID)
			}
			matched = true
		}
		if matched {
			outs = append(outs, passOut{mv.owner, id, d})
		}
	}
	ms.n.Store(int32(len(ms.m)))
	ms.mu.Unlock()
	if len(outs) == 0 {
		return ack
	}
	var sent []passOut
	s.mu.Lock()
	for _, o := range outs {
		if _, back := s.sessions[o.client]; !back {
			sent = append(sent, o)
		}
	}
	s.mu.Unlock()
	return s.passOnAll(sc, sent, ack)
}

// passOut is a delivery for a session that moved to owner.
type passOut struct {
	owner, client string
	d             SessionDelivery
}

// passOnAll passes outs on and returns the acknowledgement to use instead
// of ack: it also waits for them.
func (s *Server) passOnAll(sc SessionCluster, outs []passOut, ack ackTo) ackTo {
	if len(outs) == 0 {
		return ack
	}
	// A message another node forwarded is passed on without holding up
	// that node's batch: a forwarding stream's receiver waits for no other
	// node, or two nodes passing messages on to each other would each wait
	// for the other's receiver.
	var j *joinAcks
	if ack.batch == nil {
		j = &joinAcks{ack: ack, srv: s}
		j.left.Store(int32(len(outs)) + 1)
	}
	for _, o := range outs {
		s.stats.PassedOn.Add(1)
		sc.PassOn(o.owner, o.client, o.d, func(err error) {
			if err != nil && j == nil && o.d.QoS < 2 {
				// Its node has its acknowledgement already: the message
				// may exist only here, and goes to the owner the cluster
				// records, tried again until it has it (a slow link to
				// the owner failed such pass-ons by the hundred in a
				// jepsen-lite run). Not a QoS 2 one: the attempt may have
				// reached the owner all the same (its answer was what
				// the slow link lost), and the session may have moved on
				// since without a record of it; sent again, it would
				// reach the client twice (26 QoS 2 duplicates in a run).
				s.log.Debug("forwarded message for a session that moved not passed on; handing it on", "client_id", o.client, "owner", o.owner, "err", err)
				sc.HandOnRest(o.client, &SessionRecord{ClientID: o.client, Messages: []StoredMessage{storedDelivery(o.d)}}, FirstStep{})
			} else if err != nil {
				s.passOnFailed(o.client, o.owner, o.d.Msg.Topic, err)
				j.failed.Store(true)
			}
			if j != nil {
				j.done()
			}
		})
	}
	if j == nil {
		return ack
	}
	return ackTo{join: j}
}

// storedDelivery is a delivery as a session record holds it
// (handOnDelivery's inverse).
func storedDelivery(d SessionDelivery) StoredMessage {
	return StoredMessage{Msg: d.Msg, QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs, PacketID: d.PacketID}
}

// passOnFailed counts a message the new owner of a session did not take,
// and logs once a second at most.
func (s *Server) passOnFailed(clientID, owner, topic string, err error) {
	n := s.stats.PassOnFailures.Add(1)
	now := time.Now().UnixNano()
	last := s.passOnLogged.Load()
	if now-last >= int64(time.Second) && s.passOnLogged.CompareAndSwap(last, now) {
		s.log.Warn("message for a session that moved not passed on", "client_id", clientID, "owner", owner,
			"topic", topic, "err", err, "failures_total", n)
	}
}

// passOnSession passes handed-on deliveries for a session that moved on
// from here to its owner, without waiting (a forwarding stream's receiver
// calls it; see passOn).
func (s *Server) passOnSession(sc SessionCluster, owner, clientID string, ds []SessionDelivery) {
	for _, d := range ds {
		s.stats.PassedOn.Add(1)
		sc.PassOn(owner, clientID, d, func(err error) {
			if err != nil {
				s.passOnFailed(clientID, owner, d.Msg.Topic, err)
			}
		})
	}
}

// passOnRecord passes the messages of a late part of a handed-over session
// on to where the session went from here; without such a place they are
// dropped, and counted.
func (s *Server) passOnRecord(rec *SessionRecord) {
	if len(rec.Messages) == 0 {
		return
	}
	owner, ok := s.movedTo(rec.ClientID)
	sc := s.sessionCluster()
	if !ok && s.sessionOf(rec.ClientID) != nil {
		// The session ended here for a newer one of the same client here
		// (its client gave up waiting and connected again): the rest
		// joins that one.
		ds, _ := HandOnDeliveries(rec)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ClusterTimeout)
		defer cancel()
		s.deliverOrDrop(ctx, rec.ClientID, ds)
		return
	}
	if !ok || sc == nil {
		s.stats.PassOnFailures.Add(int64(len(rec.Messages)))
		s.log.Warn("rest of a moved session arrived after it ended here; messages dropped",
			"client_id", rec.ClientID, "messages", len(rec.Messages))
		return
	}
	ds, _ := HandOnDeliveries(rec)
	s.passOnSession(sc, owner, rec.ClientID, ds)
}
