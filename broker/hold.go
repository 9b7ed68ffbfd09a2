package broker

import "time"

// Holding a session's queue: when a session moves to this node while other
// nodes may still hold older messages of it (a node that was cut off or
// killed with the session, recorded by the cluster as its holders), the
// messages published since are queued here as usual (durably) but not sent:
// a publisher's older messages, handed on later by those nodes, go ahead of
// them ([MQTT-4.6.0-6]). The cluster ends the hold (HoldRelease) once every
// holder handed on what it had, or after a bound.

// hold starts holding the queue. Caller holds ss.mu.
func (ss *session) hold() {
	if !ss.held {
		ss.held, ss.heldSince = true, time.Now()
	}
}

// takeQueueLocked empties the queue and returns its messages in order.
// Caller holds ss.mu.
func (ss *session) takeQueueLocked() []outMsg {
	out := make([]outMsg, 0, ss.queue.len())
	for ss.queue.len() > 0 {
		out = append(out, ss.queue.pop())
	}
	return out
}

// requeueLocked puts messages taken from the queue back at its end; a
// stored message moves to a new store sequence (in the same store batch),
// so that a restart restores it behind what was placed in between. Caller
// holds ss.mu.
func (ss *session) requeueLocked(msgs []outMsg, ops []StoreOp) []StoreOp {
	for _, o := range msgs {
		if o.seq != 0 {
			old := o.seq
			ss.nextSeq++
			o.seq = ss.nextSeq
			ops = append(ops, StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()},
				StoreOp{Kind: OpDeleteMessage, ClientID: ss.id, Seq: old})
		}
		ss.queue.push(o)
	}
	return ops
}

// HeldSessions returns the sessions whose queue is held, with the time
// each hold began.
func (s *Server) HeldSessions() map[string]time.Time {
	var out map[string]time.Time
	for _, ss := range s.sessionList() {
		ss.mu.Lock()
		if ss.held {
			if out == nil {
				out = make(map[string]time.Time)
			}
			out[ss.id] = ss.heldSince
		}
		ss.mu.Unlock()
	}
	return out
}

// HoldRelease ends the hold of clientID's queue: what it queued goes to
// the connection, if there is one.
func (s *Server) HoldRelease(clientID string) {
	ss := s.sessionOf(clientID)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	if !ss.held {
		ss.mu.Unlock()
		return
	}
	ss.held = false
	ss.refill()
	c := ss.conn
	ss.mu.Unlock()
	if c != nil {
		go c.flush()
	}
}

// takeIDLocked makes packet id free for a handed-on message that may hold
// it at the client: a queued message that holds it (never sent, so its
// client does not know it) gets another id, here and in the store; a
// message in flight with it keeps it, and takeIDLocked reports false.
// Caller holds ss.mu.
func (ss *session) takeIDLocked(id uint16, ops *[]StoreOp) bool {
	if ss.usedIDs == nil || ss.usedIDs[id>>6]&(1<<(id&63)) == 0 {
		ss.markID(id)
		return true
	}
	for i := range ss.inflight {
		if ss.inflight[i].packetID == id {
			return false
		}
	}
	moved := false
	ss.queue.each(func(o *outMsg) {
		if moved || o.packetID != id || o.dup {
			return
		}
		o.packetID = ss.newPacketID()
		if o.seq != 0 {
			*ops = append(*ops, StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()})
		}
		moved = true
	})
	return moved // id stays marked: it is the handed-on message's now
}
