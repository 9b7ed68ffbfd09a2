package broker

import (
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// afterDurable runs fn once ops are durable, keeping this connection's
// order: while any earlier write of the connection is pending, even an
// empty ops waits its turn, so acknowledgements leave in the order their
// packets came. Called only from the connection's reader goroutine.
func (c *conn) afterDurable(ops []StoreOp, fn func()) {
	s := c.srv
	if s.store == nil || len(ops) == 0 && c.pending.Load() == 0 {
		fn()
		return
	}
	c.pending.Add(1)
	s.store.Commit(ops, func(err error) {
		if err != nil {
			s.log.Error("store write failed; acknowledging from memory", "client_id", c.clientID, "err", err)
		}
		fn()
		c.pending.Add(-1)
	})
}

// commit writes ops and runs fn (may be nil) once they are durable. It is
// for writes that no connection's order depends on. Never called from a
// done function of the store (it may block): use commitLater there.
func (s *Server) commit(ops []StoreOp, fn func()) {
	s.store.Commit(ops, func(err error) {
		if err != nil {
			s.log.Error("store write failed", "err", err)
		}
		if fn != nil {
			fn()
		}
	})
}

// sweep deletes the stored records of flows that ended in ss. It may block
// on the store: call it from a connection's reader goroutine.
func (s *Server) sweep(ss *session) {
	if s.store == nil {
		return
	}
	ss.mu.Lock()
	trash := ss.trash
	ss.trash = nil
	ss.mu.Unlock()
	if len(trash) == 0 {
		return
	}
	ops := make([]StoreOp, len(trash))
	for i, seq := range trash {
		ops[i] = StoreOp{Kind: OpDeleteMessage, ClientID: ss.id, Seq: seq}
	}
	s.commit(ops, nil)
}

// sessionOp is the store write of ss's record. Caller holds ss.mu.
func (ss *session) sessionOp(disconnectedAt int64) StoreOp {
	ss.wasStored = true
	rec := &SessionRecord{ClientID: ss.id, Version: byte(ss.version), Expiry: ss.expiry,
		Username: ss.info.Username, DisconnectedAt: disconnectedAt}
	for _, sub := range ss.subs {
		rec.Subscriptions = append(rec.Subscriptions, sub)
	}
	return StoreOp{Kind: OpPutSession, ClientID: ss.id, Session: rec}
}

// restore loads the stored sessions and retained set before the first
// connection: subscriptions back in the trie, queued and in-flight messages
// back in their sessions with their packet ids, and expiry timers running
// from the stored disconnect time.
func (s *Server) restore() error {
	snap, err := s.store.Load()
	if err != nil {
		return err
	}
	for _, m := range snap.Retained {
		s.retained.set(m)
	}
	now := time.Now()
	var fixes []StoreOp
	for i := range snap.Sessions {
		rec := &snap.Sessions[i]
		ss := newSession(s, rec.ClientID)
		ss.persistent = true
		ss.version = packet.Version(rec.Version)
		ss.wasStored = true
		ss.expiry = rec.Expiry
		ss.info = ClientInfo{ClientID: rec.ClientID, Username: rec.Username, Version: ss.version}
		for _, sub := range rec.Subscriptions {
			ss.subs[sub.Filter] = sub
			s.subs.Add(sub.Real, sub.Group, ss.id, subValue{sess: ss, opts: sub.Opts, subID: sub.SubID})
			s.routeAdded(sub.Real, sub.Group)
		}
		ss.nsubs.Store(int32(len(ss.subs)))
		// Messages go out in order, at most MaxInflight unacknowledged at
		// a time, and leave the store when acknowledged: of the stored
		// ones, only the first MaxInflight can have reached the client
		// before the restart, and only they are sent again with DUP.
		sent := 0
		var held []outMsg
		for _, sm := range rec.Messages {
			if sm.Seq > pendingSeqBase {
				// Held back while the session arrived here when the node
				// stopped: never sent, after everything else.
				held = append(held, outMsg{msg: sm.Msg, seq: sm.Seq, qos: sm.QoS, retain: sm.Retain, subIDs: sm.SubIDs, restored: true})
				continue
			}
			maybeSent := sm.PacketID != 0 && !sm.Released && sent < int(s.cfg.MaxInflight)
			if maybeSent {
				sent++
			}
			o := outMsg{msg: sm.Msg, seq: sm.Seq, packetID: sm.PacketID, qos: sm.QoS, retain: sm.Retain, subIDs: sm.SubIDs, dup: maybeSent, restored: true}
			if sm.ShareGroup != "" {
				o.share = s.shares.ref(shareRef{filter: sm.ShareFilter, group: sm.ShareGroup})
			}
			if sm.PacketID != 0 {
				ss.markID(sm.PacketID)
				ss.nextID = max(ss.nextID, sm.PacketID)
			}
			ss.nextSeq = max(ss.nextSeq, sm.Seq)
			if sm.Released {
				o.state = stateRel
				ss.inflight = append(ss.inflight, o)
				continue
			}
			ss.queue.push(o)
		}
		if len(rec.AwaitingRel) > 0 {
			ss.awaitingRel = make(map[uint16]struct{}, len(rec.AwaitingRel))
			for _, id := range rec.AwaitingRel {
				ss.awaitingRel[id] = struct{}{}
			}
		}
		// Held-back deliveries take their place in the queue: a
		// sequence below pendingSeqBase and a packet id.
		for _, o := range held {
			fixes = append(fixes, StoreOp{Kind: OpDeleteMessage, ClientID: ss.id, Seq: o.seq})
			o.packetID = ss.newPacketID()
			ss.nextSeq++
			o.seq = ss.nextSeq
			fixes = append(fixes, StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()})
			ss.queue.push(o)
		}
		s.sessions[ss.id] = ss
		if ss.expiry != expiryNever {
			since := time.Duration(0)
			if rec.DisconnectedAt != 0 {
				since = now.Sub(time.Unix(0, rec.DisconnectedAt))
			}
			left := max(time.Duration(ss.expiry)*time.Second-since, 0)
			ss.expiryTimer = time.AfterFunc(left, func() { s.expireSession(ss) })
		}
	}
	if len(fixes) > 0 {
		s.commitOps(fixes, true)
	}
	if n := len(snap.Sessions); n > 0 || len(snap.Retained) > 0 {
		s.log.Info("restored from store", "sessions", n, "retained", len(snap.Retained))
	}
	return nil
}

// deleteOp is the store write that forgets ss, or false when ss was never
// stored. Caller holds ss.mu.
func (ss *session) deleteOp() (StoreOp, bool) {
	if !ss.wasStored || ss.srv.store == nil {
		return StoreOp{}, false
	}
	ss.wasStored = false
	return StoreOp{Kind: OpDeleteSession, ClientID: ss.id}, true
}
