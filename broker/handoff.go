package broker

// The leaving side of a session's move: the node a client left hands its
// session over (HandOver), collects what still reaches it until the new
// node has it (FinishHandOver) or the move times out (endMove), and passes
// that on. The arriving side is in handover.go.

import (
	"errors"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// HandOver closes the connection of clientID on this node (DISCONNECT 0x8E
// to a 5.0 client, [MQTT-3.1.4-3]) because the client connected to another
// node. A session that outlives its connection is returned; it stays
// registered here, collecting messages for the new owner, until
// FinishHandOver (or moveTimeout). It reports false when there is no such
// session here.
func (s *Server) HandOver(clientID, to string) (*SessionRecord, bool) {
	s.mu.Lock()
	ss := s.sessions[clientID]
	if ss == nil {
		s.mu.Unlock()
		return nil, false
	}
	ss.mu.Lock()
	s.mu.Unlock()
	if oc := ss.conn; oc != nil {
		ss.conn = nil
		oc.disconnect(packet.SessionTakenOver)
	}
	if !ss.persistent || ss.ended {
		ss.mu.Unlock()
		s.removeSession(ss)
		return nil, false
	}
	ss.moving = true
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
		ss.expiryTimer = nil
	}
	// The session lives on with a new connection: a will waiting for its
	// delay is cancelled ([MQTT-3.1.3-9]).
	s.cancelPendingWillLocked(ss)
	rec := ss.exportLocked(false)
	if ss.firstStep == nil {
		ss.firstStep = make(msgSet, len(rec.Messages))
	}
	ss.firstStepTo = to
	for i := range rec.Messages {
		ss.firstStep.add(rec.Messages[i].Msg)
	}
	if ss.moveTimer == nil {
		ss.moveTimer = time.AfterFunc(s.moveTimeout(), func() { s.endMove(clientID) })
	}
	ss.mu.Unlock()
	return rec, true
}

// ErrPreviousNodeDown is what a SessionTransfer's Finish returns when the
// node the session comes from is down: the session does not wait for it
// (its new deliveries go out), and what that node holds comes by a hand-on
// once it is back.
var ErrPreviousNodeDown = errors.New("broker: the node the session comes from is down")

// ErrMoveInProgress is FinishHandOver's answer while the session is still
// arriving here from a third node: ask again later.
var ErrMoveInProgress = errors.New("broker: the session is still arriving from another node")

// FinishHandOver ends a session handed over by HandOver and returns it as
// it is now: what HandOver returned and what it collected since (the new
// owner meets the repeated messages once, by their ids); nil when there is
// none.
func (s *Server) FinishHandOver(clientID string) (*SessionRecord, error) {
	return s.FinishHandOverTo(clientID, "", 0)
}

// FinishHandOverTo is FinishHandOver for a session that moved to owner: the
// messages that reach this node for it during keep are passed on there
// (PassOnFor), from the moment it leaves, so that none finds it gone and
// no one to take it in between.
func (s *Server) FinishHandOverTo(clientID, owner string, keep time.Duration) (*SessionRecord, error) {
	s.mu.Lock()
	ss := s.sessions[clientID]
	if ss == nil || !ss.moving {
		s.mu.Unlock()
		return nil, nil
	}
	s.mu.Unlock()
	// A session still arriving from a third node is handed on whole: wait
	// (bounded) for the rest of it.
	ss.mu.Lock()
	wait := ss.imported
	ss.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-time.After(s.cfg.ClusterTimeout):
			return nil, ErrMoveInProgress
		}
	}
	s.mu.Lock()
	if s.sessions[clientID] != ss || !ss.moving {
		s.mu.Unlock()
		return nil, nil
	}
	ss.mu.Lock()
	rec := ss.exportLocked(true)
	if ss.moveTimer != nil {
		ss.moveTimer.Stop()
		ss.moveTimer = nil
	}
	if owner != "" {
		s.PassOnFor(clientID, owner, rec.Subscriptions, keep)
	}
	s.dropLocked(ss)
	ss.mu.Unlock()
	s.mu.Unlock()
	s.finishDrop(ss)
	return rec, nil
}

// dropLocked unregisters ss and queues its store deletion. Caller holds
// s.mu and ss.mu; finishDrop must follow once both are released.
func (s *Server) dropLocked(ss *session) {
	if oc := ss.conn; oc != nil {
		ss.conn = nil
		oc.disconnect(packet.SessionTakenOver)
	}
	s.endSessionLocked(ss)
	if op, ok := ss.deleteOp(); ok {
		ss.dropOps = append(ss.dropOps, op)
	}
}

func (s *Server) finishDrop(ss *session) {
	ss.mu.Lock()
	ops := ss.dropOps
	ss.dropOps = nil
	ss.mu.Unlock()
	if len(ops) > 0 {
		s.commit(ops, nil)
	}
	s.sessionEnded(ss)
}

// exportLocked returns the session as a record, and empties it when empty
// is set: messages in flight keep their packet ids, queued ones leave
// theirs behind unless they may have been sent already. Caller holds ss.mu.
func (ss *session) exportLocked(empty bool) *SessionRecord {
	rec := &SessionRecord{ClientID: ss.id, Version: byte(ss.version), Expiry: ss.expiry, Username: ss.info.Username}
	for _, sub := range ss.subs {
		rec.Subscriptions = append(rec.Subscriptions, sub)
	}
	for i := range ss.inflight {
		rec.Messages = append(rec.Messages, *ss.inflight[i].record())
	}
	ss.queue.each(func(o *outMsg) {
		sm := o.record()
		sm.Seq = 0
		if !o.dup {
			sm.PacketID = 0
		}
		// A queued message that may have reached the client already (one
		// restored after a restart, to be sent again with DUP) keeps its
		// packet id: the next node resends it as in flight, and a QoS 2
		// one is not handed on.
		rec.Messages = append(rec.Messages, *sm)
	})
	// Deliveries held back while this session was arriving from another
	// node come last.
	for i := range ss.pending {
		sm := ss.pending[i].record()
		sm.PacketID, sm.Seq = 0, 0
		rec.Messages = append(rec.Messages, *sm)
	}
	for id := range ss.awaitingRel {
		rec.AwaitingRel = append(rec.AwaitingRel, id)
	}
	rec.Delivered = ss.srv.recent.of(ss.id)
	if empty {
		// What was sent may have reached the client: remembered as
		// delivered here. What was only queued was not: should it come
		// back to this node (a hand-on, after another move), it is
		// delivered.
		for i := range ss.inflight {
			ss.retire(&ss.inflight[i])
		}
		clear(ss.inflight)
		ss.inflight = ss.inflight[:0]
		for ss.queue.len() > 0 {
			o := ss.queue.pop()
			if o.dup {
				ss.retire(&o)
			} else {
				ss.discard(&o)
			}
		}
		clear(ss.pending)
		ss.pending = nil
		ss.awaitingRel = nil
	}
	return rec
}

// FirstStep is what the first step of a move carried to the node that
// took it (To), for HandOnRest.
type FirstStep struct {
	To       string
	Messages []StoredMessage
}

// endMove ends a handed-over session whose new owner never finished the
// move, once it is not arriving from a third node any more. The new owner
// has what the first step of the move carried (durably, before its
// client's CONNACK); what reached the session here since goes to the node
// that owns the session now, with the first step's messages apart
// (SessionCluster.HandOnRest decides whether they go too).
func (s *Server) endMove(clientID string) {
	s.mu.Lock()
	var first msgSet
	var to string
	if ss := s.sessions[clientID]; ss != nil {
		ss.mu.Lock()
		first, to = ss.firstStep, ss.firstStepTo
		ss.mu.Unlock()
	}
	s.mu.Unlock()
	rec, err := s.FinishHandOver(clientID)
	if err != nil {
		time.AfterFunc(s.moveTimeout()/4, func() { s.endMove(clientID) })
		return
	}
	if rec == nil {
		return
	}
	rest := rec.Messages[:0:0]
	fs := FirstStep{To: to}
	for _, sm := range rec.Messages {
		if first.has(sm.Msg) {
			fs.Messages = append(fs.Messages, sm)
		} else {
			rest = append(rest, sm)
		}
	}
	sc := s.sessionCluster()
	if len(rest)+len(fs.Messages) == 0 || sc == nil {
		return
	}
	s.log.Warn("session moved to a node that never finished the move; what reached it here since goes to its owner",
		"client_id", clientID, "messages", len(rest), "first_step_to", to, "first_step_messages", len(fs.Messages))
	rec.Messages = rest
	sc.HandOnRest(clientID, rec, fs)
}
