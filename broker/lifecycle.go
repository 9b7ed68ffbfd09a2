package broker

import (
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// sessionLifetime says whether a CONNECT asks for a session that outlives
// the connection, and for how long (seconds after disconnect).
func (s *Server) sessionLifetime(cp *packet.Connect) (persistent bool, expiry uint32) {
	if cp.Version < packet.V5 {
		if cp.CleanStart {
			return false, 0
		}
		expiry = expiryNever
	} else {
		expiry = cp.Properties.SessionExpiry
	}
	if max := s.cfg.MaxSessionExpiry; max > 0 && expiry > max {
		expiry = max
	}
	return expiry > 0, expiry
}

// attach binds an authenticated connection to its session: a live
// connection with the same client id is taken over ([MQTT-3.1.4-3], 0x8E in
// 5.0), Clean Start discards the old session ([MQTT-3.1.2-4]), otherwise the
// session resumes ([MQTT-3.1.2-5]) with its in-flight messages resent. The
// CONNACK is queued before anything the session sends.
func (s *Server) attach(c *conn, cp *packet.Connect, ack *packet.Connack, tr *SessionTransfer) (*session, bool) {
	persistent, expiry := s.sessionLifetime(cp)
	if tr != nil && (tr.Record != nil || tr.Finish != nil) {
		s.adopt(cp, tr, persistent, expiry)
	}
	var ended *session
	s.mu.Lock()
	ss := s.sessions[cp.ClientID]
	present := false
	if ss != nil {
		ss.mu.Lock()
		if oc := ss.conn; oc != nil {
			ss.conn = nil
			oc.disconnect(packet.SessionTakenOver)
		}
		if cp.CleanStart || tr != nil && tr.Discard {
			s.endSessionLocked(ss)
			ss.mu.Unlock()
			ended, ss = ss, nil
		} else {
			present = true
		}
	}
	if ss == nil {
		ss = newSession(s, cp.ClientID)
		ss.mu.Lock()
		s.sessions[cp.ClientID] = ss
	}
	c.sess = ss
	s.mu.Unlock()

	ss.version = c.version
	ss.info = c.info
	ss.persistent = persistent
	ss.expiry = expiry
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
		ss.expiryTimer = nil
	}
	// [MQTT-3.1.3-9]: a new connection before the will delay passed cancels
	// the will.
	if ss.willTimer != nil {
		s.cancelPendingWillLocked(ss)
	}
	if tr != nil {
		ss.epoch = tr.Epoch
		if tr.Hold && !cp.CleanStart && persistent {
			ss.hold()
		}
	}
	ss.sendQuota = int(s.cfg.MaxInflight)
	if c.version == packet.V5 && cp.Properties.Has(packet.PropReceiveMaximum) {
		ss.sendQuota = int(min(cp.Properties.ReceiveMaximum, s.cfg.MaxInflight))
	}
	ack.SessionPresent = present
	c.established.Store(true)
	c.enqueue(outItem{pkt: ack})
	ss.resume(c)
	var ops []StoreOp
	if s.store != nil {
		if ended != nil {
			ended.mu.Lock()
			if op, ok := ended.deleteOp(); ok {
				ops = append(ops, op)
			}
			ended.mu.Unlock()
		}
		if ss.stored() {
			ops = append(ops, ss.sessionOp(0))
		} else if op, ok := ss.deleteOp(); ok {
			ops = append(ops, op)
		}
	}
	ss.mu.Unlock()
	if len(ops) > 0 {
		s.commit(ops, nil)
	}
	if ended != nil {
		s.sessionEnded(ended)
	}
	return ss, present
}

// teardown runs once when the reader goroutine ends: it publishes or
// schedules the will and detaches the session, which ends now or expires
// later.
func (c *conn) teardown() {
	c.wmu.Lock()
	closing := c.closing
	c.wmu.Unlock()
	if !closing {
		c.closeNow()
	}
	c.rd.Release()
	c.stopAuthExpiry()
	ss := c.sess
	if ss == nil {
		return
	}
	s := c.srv
	s.stats.Connected.Add(-1)
	var will *Message
	var willDelay time.Duration
	if c.will != nil && !c.graceful {
		will = willMessage(c.will, c.clientID, time.Now())
		willDelay = time.Duration(c.will.Properties.WillDelay) * time.Second
	}

	ss.mu.Lock()
	if ss.conn != c {
		// Taken over. The will goes now unless the session lives on in the
		// new connection and the will had a delay.
		keep := !ss.ended && willDelay > 0
		ss.mu.Unlock()
		if will != nil && !keep {
			s.publishWill(will, c.willID)
			return
		}
		s.clearWill(c.willID)
		return
	}
	ss.conn = nil
	if !ss.persistent {
		ss.mu.Unlock()
		s.removeSession(ss)
		if will != nil {
			s.publishWill(will, c.willID)
			return
		}
		s.clearWill(c.willID)
		return
	}
	willID := c.willID
	if will != nil {
		if ss.expiry != expiryNever {
			willDelay = min(willDelay, time.Duration(ss.expiry)*time.Second)
		}
		if willDelay <= 0 {
			ss.mu.Unlock()
			s.publishWill(will, willID)
			willID = "" // claimed, not cleared
			ss.mu.Lock()
		} else {
			ss.pendingWill, ss.pendingWillID = will, willID
			willID = "" // the cluster keeps it until it goes or is cancelled
			ss.willTimer = time.AfterFunc(willDelay, func() { s.fireWill(ss) })
		}
	}
	if sc := s.sessionCluster(); sc != nil && ss.epoch != 0 && !ss.ended {
		sc.ReleaseSession(ss.id, ss.epoch, ss.expiry)
	}
	if ss.expiry != expiryNever && ss.conn == nil && !ss.ended {
		d := time.Duration(ss.expiry) * time.Second
		ss.expiryTimer = time.AfterFunc(d, func() { s.expireSession(ss) })
	}
	var ops []StoreOp
	if ss.stored() && !ss.ended {
		ops = append(ops, ss.sessionOp(time.Now().UnixNano()))
	}
	ss.mu.Unlock()
	s.clearWill(willID)
	s.sweep(ss)
	if len(ops) > 0 {
		s.commit(ops, nil)
	}
}

// fireWill publishes a delayed will unless a connection resumed the session
// first.
func (s *Server) fireWill(ss *session) {
	ss.mu.Lock()
	will, willID := ss.pendingWill, ss.pendingWillID
	ss.pendingWill, ss.willTimer, ss.pendingWillID = nil, nil, ""
	ss.mu.Unlock()
	if will != nil {
		s.publishWill(will, willID)
		return
	}
	s.clearWill(willID)
}

// expireSession ends an offline session whose expiry interval passed,
// unless the cluster records the session as alive: under a later claim of
// another node that has not expired (the session here is a copy, whose
// messages wait to be handed on to that node, which a slow or cut link
// may delay past the copy's own expiry: 937 messages lost in a
// jepsen-lite slow-link run), or with its release not recorded yet (no
// quorum: the cluster would resume the session for its client, 52
// messages lost when it did so without them).
func (s *Server) expireSession(ss *session) {
	ss.mu.Lock()
	offline := ss.conn == nil && !ss.ended
	epoch := ss.epoch
	ss.mu.Unlock()
	if !offline {
		return
	}
	if sc := s.sessionCluster(); sc != nil && epoch != 0 {
		if again, ok := sc.SessionLivesOn(ss.id, epoch); ok {
			ss.mu.Lock()
			if ss.conn == nil && !ss.ended {
				if !ss.outlives {
					ss.outlives = true
					s.log.Info("session kept past its expiry while the cluster records it alive", "client_id", ss.id)
				}
				ss.expiryTimer = time.AfterFunc(again, func() { s.expireSession(ss) })
			}
			ss.mu.Unlock()
			return
		}
	}
	s.removeSession(ss)
}

// removeSession ends ss if it is still registered and offline.
func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.id] != ss {
		s.mu.Unlock()
		return
	}
	ss.mu.Lock()
	if ss.conn != nil || ss.ended {
		ss.mu.Unlock()
		s.mu.Unlock()
		return
	}
	s.endSessionLocked(ss)
	op, stored := ss.deleteOp()
	epoch := ss.epoch
	ss.mu.Unlock()
	s.mu.Unlock()
	if stored {
		s.commit([]StoreOp{op}, nil)
	}
	if sc := s.sessionCluster(); sc != nil && epoch != 0 {
		sc.EndSession(ss.id, epoch)
	}
	s.sessionEnded(ss)
}

// endSessionLocked unregisters ss and its subscriptions. Caller holds s.mu
// and ss.mu; sessionEnded must follow once both are released.
func (s *Server) endSessionLocked(ss *session) {
	ss.ended = true
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
	for _, sub := range ss.subs {
		if removed, _ := s.subs.Remove(sub.Real, sub.Group, ss.id); removed && s.routeRemoved(sub.Real, sub.Group) {
			ss.dropRoutes = append(ss.dropRoutes, shareRef{filter: sub.Real, group: sub.Group})
		}
	}
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
		ss.expiryTimer = nil
	}
}

// sessionEnded finishes ending a session outside the locks: a will still
// waiting for its delay is published now (the session's end cuts the delay
// short, [MQTT-3.1.3-9]), and messages it held through shared subscriptions
// go to other members of their groups.
func (s *Server) sessionEnded(ss *session) {
	ss.mu.Lock()
	will, willID := ss.pendingWill, ss.pendingWillID
	if ss.willTimer != nil {
		ss.willTimer.Stop()
	}
	ss.willTimer, ss.pendingWill, ss.pendingWillID = nil, nil, ""
	orphans := ss.sharedOrphans()
	drop := ss.dropRoutes
	ss.dropRoutes = nil
	ss.mu.Unlock()
	if len(drop) > 0 {
		go func() {
			for _, r := range drop {
				if err := s.setRouteOf(r.filter, r.group, 0); err != nil {
					s.log.Warn("route not removed", "topic", r.filter, "group", r.group, "err", err)
				}
			}
		}()
	}
	if will != nil {
		s.publishWill(will, willID)
	} else {
		s.clearWill(willID)
	}
	s.redistribute(orphans)
}

// stopTimers stops every session timer (on Close).
func (s *Server) stopTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		ss.mu.Lock()
		if ss.expiryTimer != nil {
			ss.expiryTimer.Stop()
		}
		if ss.willTimer != nil {
			ss.willTimer.Stop()
		}
		ss.mu.Unlock()
	}
}

// willMessage builds the message a will publishes.
func willMessage(w *packet.Will, origin string, now time.Time) *Message {
	m := &Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain, Origin: origin, Will: true}
	copyPassThrough(&m.Props, &w.Properties)
	if w.Properties.Has(packet.PropMessageExpiry) {
		m.ExpiresAt = now.Add(time.Duration(w.Properties.MessageExpiry) * time.Second).UnixNano()
	}
	return m
}
