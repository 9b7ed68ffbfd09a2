package broker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Hand-on: a node cut off from the cluster (a partition, a pause) may
// queue messages for a persistent session that the cluster meanwhile gave
// to another node. Once it is back it hands those messages on to the
// session's owner, addressed to that session alone; the owner meets the
// ones its client already got once, by (node, id).

// SessionDelivery is one message for one session, as handed on.
type SessionDelivery struct {
	Msg    *Message
	QoS    byte
	Retain bool
	SubIDs []uint32
	// PacketID is the packet id the session gave a QoS 2 message on the
	// node handing it on, when the message may have reached the client
	// (sent, its PUBREC not seen); 0 otherwise. See DeliverToSession.
	PacketID uint16
}

// handOnDelivery is the hand-on form of a message of a session record: a
// QoS 2 message that may have reached the client keeps its packet id.
func handOnDelivery(sm *StoredMessage) SessionDelivery {
	d := SessionDelivery{Msg: sm.Msg, QoS: sm.QoS, Retain: sm.Retain, SubIDs: sm.SubIDs}
	if sm.QoS == 2 && !sm.Released {
		d.PacketID = sm.PacketID
	}
	return d
}

// HandOnDeliveries returns the messages of a session record as handed on
// to the session's owner; a QoS 2 message whose PUBREL went out already
// is left out (its client has it: sending it again would be a second
// delivery), and counted in the second result.
func HandOnDeliveries(rec *SessionRecord) ([]SessionDelivery, int) {
	ds := make([]SessionDelivery, 0, len(rec.Messages))
	released := 0
	for i := range rec.Messages {
		sm := &rec.Messages[i]
		if sm.QoS == 2 && sm.Released {
			released++
			continue
		}
		ds = append(ds, handOnDelivery(sm))
	}
	return ds, released
}

// Surrender ends the offline session of clientID here without publishing
// its will and returns everything it held, for its owner elsewhere; false
// when there is no such session, or it is connected or moving. Messages
// that reach this node for it during keep go on to owner (PassOnFor).
func (s *Server) Surrender(clientID, owner string, keep time.Duration) (*SessionRecord, bool) {
	s.mu.Lock()
	ss := s.sessions[clientID]
	if ss == nil {
		s.mu.Unlock()
		return nil, false
	}
	ss.mu.Lock()
	if ss.conn != nil || ss.moving || ss.importing || ss.ended {
		ss.mu.Unlock()
		s.mu.Unlock()
		return nil, false
	}
	rec := ss.exportLocked(true)
	s.cancelPendingWillLocked(ss)
	if owner != "" {
		// From the moment it leaves (FinishHandOverTo).
		s.PassOnFor(clientID, owner, rec.Subscriptions, keep)
	}
	s.dropLocked(ss)
	ss.mu.Unlock()
	s.mu.Unlock()
	s.finishDrop(ss)
	return rec, true
}

// ErrNoSession is DeliverToSession's answer for a client id whose session
// this node neither holds nor saw move on lately.
var ErrNoSession = errors.New("broker: no session of that client id on this node")

// deliverOrDrop is DeliverToSession for messages that have no other
// place to go: without the session they are dropped, and counted.
func (s *Server) deliverOrDrop(ctx context.Context, clientID string, ds []SessionDelivery) {
	if err := s.DeliverToSession(ctx, clientID, ds); errors.Is(err, ErrNoSession) {
		s.stats.PassOnFailures.Add(int64(len(ds)))
		s.log.Warn("handed-on messages for a session that ended here; dropped", "client_id", clientID, "messages", len(ds))
	}
}

// DeliverToSession queues handed-on messages in the session of clientID
// on this node, skipping those it holds or delivered lately, and returns
// once they are placed (durably for a stored session). Messages for a
// session that moved on from here lately follow it there (passon.go);
// for a session this node does not know it returns ErrNoSession, placing
// nothing: the caller knows better where they belong.
func (s *Server) DeliverToSession(ctx context.Context, clientID string, ds []SessionDelivery) error {
	ss := s.sessionOf(clientID)
	if ss == nil {
		if owner, ok := s.movedTo(clientID); ok {
			if sc := s.sessionCluster(); sc != nil {
				s.passOnSession(sc, owner, clientID, ds)
			}
			return nil
		}
		return ErrNoSession
	}
	ss.mu.Lock()
	// The same messages may still come the usual way, forwarded by nodes
	// that route to this one: the session meets them once, by (node, id),
	// for arrivedWindow from now (arrivedOnce).
	if ss.arrived == nil {
		ss.arrived = make(msgSet)
	}
	ss.arrivedUntil = time.Now().Add(arrivedWindow)
	held := make(msgSet)
	for i := range ss.inflight {
		held.add(ss.inflight[i].msg)
	}
	ss.queue.each(func(o *outMsg) { held.add(o.msg) })
	for i := range ss.pending {
		held.add(ss.pending[i].msg)
	}
	var ops []StoreOp
	var start *conn
	// Handed-on messages go into the queue, even while the session is
	// arriving (they may be what it waits for), and take their places
	// there by the order their nodes received them (orderQueueLocked):
	// ahead of younger messages from the same node, and behind older
	// ones that the rest of a move brings later.
	importing := ss.importing
	ss.importing = false
	resent := false
	for _, d := range ds {
		if held.has(d.Msg) || s.recent.has(clientID, d.Msg) {
			continue
		}
		if d.PacketID != 0 && d.QoS == 2 {
			// It may have reached the client under that packet id: sent
			// again as the same flow, with DUP, if the id is free here.
			if !ss.takeIDLocked(d.PacketID, &ops) {
				s.stats.PassOnFailures.Add(1)
				s.log.Warn("handed-on QoS 2 message not delivered: its packet id is in flight here for another message",
					"client_id", clientID, "packet_id", d.PacketID, "topic", d.Msg.Topic)
				continue
			}
			ss.usedIDs[d.PacketID>>6] &^= 1 << (d.PacketID & 63) // importLocked marks it again
			ops = ss.importLocked(&StoredMessage{Msg: d.Msg, QoS: 2, Retain: d.Retain, SubIDs: d.SubIDs, PacketID: d.PacketID}, held, ops)
			resent = true
			continue
		}
		held.add(d.Msg)
		var c *conn
		if ops, c = ss.deliverLocked(outMsg{msg: d.Msg, qos: d.QoS, retain: d.Retain, subIDs: d.SubIDs}, ops); c != nil {
			start = c
		}
	}
	ops = ss.orderQueueLocked(ops)
	if resent && ss.conn != nil {
		ss.refill()
		start = ss.conn
	}
	ss.importing = importing
	ss.mu.Unlock()
	s.commitOps(ops, true)
	if start != nil {
		go start.flush()
	}
	return ctx.Err()
}

func (m msgSet) add(msg *Message) {
	if msg.ID != 0 {
		m[msgKey{msg.Node, msg.ID}] = struct{}{}
	}
}

// MessageRef names a message cluster-wide: the node that received it from
// its publisher ("" for this one) and its id there.
type MessageRef struct {
	Node string
	ID   uint64
}

// deliveredHistory bounds the Delivered list a moving session takes along.
const deliveredHistory = 1024

// remember adds what rec says its session was delivered to seen and to the
// recent deliveries of its client here.
func (s *Server) remember(rec *SessionRecord, seen msgSet) {
	for _, d := range rec.Delivered {
		if d.ID == 0 {
			continue
		}
		seen[d] = struct{}{}
		s.recent.addKey(rec.ClientID, d)
	}
}

// recentSet remembers the last messages whose delivery to a session ended
// (acknowledged, or handed to another node), so that a hand-on does not
// deliver them again. It holds a fixed number of entries.
type recentSet struct {
	mu   sync.Mutex
	keys map[recentKey]struct{}
	ring []recentKey
	next int
}

type recentKey struct {
	client string
	msg    msgKey
}

const recentEntries = 1 << 16

func (r *recentSet) add(client string, m *Message) {
	if m.ID == 0 {
		return
	}
	r.addKey(client, msgKey{m.Node, m.ID})
}

func (r *recentSet) addKey(client string, mk msgKey) {
	k := recentKey{client, mk}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = make(map[recentKey]struct{}, recentEntries)
		r.ring = make([]recentKey, recentEntries)
	}
	if _, ok := r.keys[k]; ok {
		return
	}
	if old := r.ring[r.next]; old.client != "" {
		delete(r.keys, old)
	}
	r.ring[r.next] = k
	r.next = (r.next + 1) % recentEntries
	r.keys[k] = struct{}{}
}

func (r *recentSet) has(client string, m *Message) bool {
	if m.ID == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.keys[recentKey{client, msgKey{m.Node, m.ID}}]
	return ok
}

// of returns the recent deliveries of client, newest first, at most
// deliveredHistory of them.
func (r *recentSet) of(client string) []MessageRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []MessageRef
	for i := range r.ring {
		k := r.ring[(r.next-1-i+2*len(r.ring))%len(r.ring)]
		if k.client == "" {
			break
		}
		if k.client == client {
			out = append(out, k.msg)
			if len(out) == deliveredHistory {
				break
			}
		}
	}
	return out
}
