package broker

// What a SessionCluster (handover.go) asks of the broker's sessions besides
// moving them: their list, their claim epochs, closing connections the
// cluster moved elsewhere, installing the sessions of a dead node, and the
// subscriptions it records.

import (
	"sort"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// recordSubscriptions hands the session's subscriptions to the cluster
// after a SUBSCRIBE or UNSUBSCRIBE of a claimed persistent session.
func (c *conn) recordSubscriptions() {
	sc := c.srv.sessionCluster()
	if sc == nil {
		return
	}
	ss := c.sess
	ss.mu.Lock()
	if !ss.persistent || ss.epoch == 0 || ss.ended {
		ss.mu.Unlock()
		return
	}
	subs := make([]Subscription, 0, len(ss.subs))
	for _, sub := range ss.subs {
		subs = append(subs, sub)
	}
	epoch := ss.epoch
	ss.mu.Unlock()
	sort.Slice(subs, func(i, j int) bool { return subs[i].Filter < subs[j].Filter })
	sc.SetSubscriptions(ss.id, epoch, subs)
}

// Kick closes the live connection of clientID (DISCONNECT 0x8E to a 5.0
// client, [MQTT-3.1.4-3]): the client connected to another node. A
// persistent session stays here, offline.
func (s *Server) Kick(clientID string) {
	ss := s.sessionOf(clientID)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	oc := ss.conn
	ss.mu.Unlock()
	if oc != nil {
		oc.disconnect(packet.SessionTakenOver)
	}
}

// ConnectedClaims returns the claim epochs of the persistent sessions
// connected here, by client id.
func (s *Server) ConnectedClaims() map[string]uint64 {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	out := make(map[string]uint64)
	for _, ss := range list {
		ss.mu.Lock()
		if ss.conn != nil && ss.epoch != 0 {
			out[ss.id] = ss.epoch
		}
		ss.mu.Unlock()
	}
	return out
}

// SetSessionEpoch gives a session restored from the store its claim epoch,
// as the cluster recorded it.
func (s *Server) SetSessionEpoch(clientID string, epoch uint64) {
	ss := s.sessionOf(clientID)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	if ss.epoch == 0 {
		ss.epoch = epoch
	}
	ss.mu.Unlock()
}

// OfflineSessions lists the persistent sessions with no connection that
// are neither moving to nor arriving from another node.
func (s *Server) OfflineSessions() []string {
	return s.sessionIDs(func(ss *session) bool {
		return ss.persistent && ss.conn == nil && !ss.moving && !ss.importing
	})
}

// MovingSessions lists the client ids of sessions handed over to another
// node whose move has not finished (HandOver, and no FinishHandOver yet).
func (s *Server) MovingSessions() []string {
	return s.sessionIDs(func(ss *session) bool { return ss.moving })
}

// sessionIDs lists the client ids of the sessions that have not ended and
// for which pick, called under the session's lock, reports true.
func (s *Server) sessionIDs(pick func(*session) bool) []string {
	var ids []string
	for _, ss := range s.sessionList() {
		ss.mu.Lock()
		if !ss.ended && pick(ss) {
			ids = append(ids, ss.id)
		}
		ss.mu.Unlock()
	}
	return ids
}

// EndMove ends now, as moveTimeout would, the move of a session handed
// over to another node: what reached it here since the move began goes to
// the session's owner (SessionCluster.HandOnRest).
func (s *Server) EndMove(clientID string) {
	s.endMove(clientID)
}

// HasSession reports whether this broker holds a session for clientID.
func (s *Server) HasSession(clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[clientID] != nil
}

// AdoptOffline installs, without a connection, a persistent session whose
// node died: the cluster made this node its owner, so that the messages
// published for it from now on are queued here until its client
// reconnects (anywhere: the session then moves as usual). It does nothing
// when a session of that client id is already here.
func (s *Server) AdoptOffline(rec *SessionRecord, epoch uint64, hold bool) {
	ss := newSession(s, rec.ClientID)
	ss.persistent, ss.expiry, ss.epoch = true, rec.Expiry, epoch
	if hold {
		ss.hold()
	}
	ss.version = packet.Version(rec.Version)
	if ss.version == 0 {
		ss.version = packet.V5
	}
	ss.info = ClientInfo{ClientID: rec.ClientID, Username: rec.Username, Version: ss.version}
	s.mu.Lock()
	if s.sessions[rec.ClientID] != nil || s.closed {
		s.mu.Unlock()
		return
	}
	s.sessions[ss.id] = ss
	ss.mu.Lock()
	if ss.expiry != expiryNever {
		left := time.Duration(ss.expiry) * time.Second
		if rec.DisconnectedAt != 0 {
			left -= time.Since(time.Unix(0, rec.DisconnectedAt))
		}
		ss.expiryTimer = time.AfterFunc(max(left, 0), func() { s.expireSession(ss) })
	}
	ss.mu.Unlock()
	s.mu.Unlock()
	s.installSubscriptions(ss, rec)
	ss.mu.Lock()
	var ops []StoreOp
	if ss.stored() && !ss.ended {
		ops = append(ops, ss.sessionOp(rec.DisconnectedAt))
	}
	ss.mu.Unlock()
	s.commitOps(ops, false)
	s.log.Info("session of a lost node adopted", "client_id", ss.id, "subscriptions", len(rec.Subscriptions))
}

// Fence closes every client connection (DISCONNECT 0x9C use another server
// to 5.0 clients): the cluster took this node for dead while it could not
// tell, published the wills of its connections and gave its persistent
// sessions to other nodes, so its clients must reconnect. Wills the
// cluster published are not published again.
func (s *Server) Fence() int {
	return s.CloseConnections(nil)
}

// CloseConnections closes, like Fence, the connections for which pick
// reports true (nil: all), given the cluster's record of the connection's
// will ("" for none). It returns how many it closed.
func (s *Server) CloseConnections(pick func(willID string) bool) int {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		// Before its CONNACK a connection has no will to go by.
		if pick == nil || c.established.Load() {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	closed := 0
	for _, c := range conns {
		if pick != nil {
			var willID string
			if p := c.willRef.Load(); p != nil {
				willID = *p
			}
			if !pick(willID) {
				continue
			}
		}
		c.disconnect(packet.UseAnotherServer)
		closed++
	}
	return closed
}

// PersistentSessions lists the client ids of this broker's sessions that
// outlive their connections.
func (s *Server) PersistentSessions() []string {
	return s.sessionIDs(func(ss *session) bool { return ss.persistent })
}
