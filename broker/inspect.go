package broker

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// The views below serve the admin API and the metrics: they copy what they
// report under the locks that guard it and hold Server.mu only to list the
// connections or sessions. They walk everything, so they are for an
// operator's request or a scrape, not for the message path.

// ClientStatus is one connected client.
type ClientStatus struct {
	ClientID  string
	Username  string
	Remote    string
	Version   packet.Version
	KeepAlive time.Duration
	// ConnectedAt is when the connection was accepted.
	ConnectedAt   time.Time
	Persistent    bool
	Subscriptions int
	Queued        int // messages waiting in the session's queue
	Inflight      int // sent and not yet acknowledged
}

// Clients returns the clients connected to this broker (their CONNECT
// accepted), sorted by client id.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ClientStatus, 0, len(conns))
	for _, c := range conns {
		// The reader goroutine sets these before established, and never
		// again.
		if !c.established.Load() {
			continue
		}
		cs := ClientStatus{ClientID: c.clientID, Version: c.version, KeepAlive: c.keepAlive,
			ConnectedAt: time.Unix(0, c.since)}
		if a := c.nc.RemoteAddr(); a != nil {
			cs.Remote = a.String()
		}
		ss := c.sess
		ss.mu.Lock()
		if ss.conn != c {
			ss.mu.Unlock()
			continue // taken over, or closing
		}
		cs.Username = ss.info.Username
		cs.Persistent = ss.persistent
		cs.Subscriptions = len(ss.subs)
		cs.Queued, cs.Inflight = ss.queue.len(), len(ss.inflight)
		ss.mu.Unlock()
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b ClientStatus) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// SessionStatus is one session held by this broker.
type SessionStatus struct {
	ClientID      string
	Connected     bool
	Persistent    bool
	Expiry        uint32 // seconds after disconnect; 0xFFFFFFFF never
	Epoch         uint64 // the cluster's claim (0: not registered)
	Subscriptions int
	Queued        int
	Inflight      int
	Moving        bool // handed over to another node, not yet finished
}

// Sessions returns the sessions this broker holds, connected or not,
// sorted by client id.
func (s *Server) Sessions() []SessionStatus {
	list := s.sessionList()
	out := make([]SessionStatus, 0, len(list))
	for _, ss := range list {
		ss.mu.Lock()
		if !ss.ended {
			out = append(out, SessionStatus{ClientID: ss.id, Connected: ss.conn != nil, Persistent: ss.persistent,
				Expiry: ss.expiry, Epoch: ss.epoch, Subscriptions: len(ss.subs), Queued: ss.queue.len(),
				Inflight: len(ss.inflight), Moving: ss.moving})
		}
		ss.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b SessionStatus) int { return strings.Compare(a.ClientID, b.ClientID) })
	return out
}

// ClientSubscription is one subscription of one session.
type ClientSubscription struct {
	ClientID string
	Subscription
}

// Subscriptions returns the subscriptions of clientID's session on this
// broker (every session's when clientID is ""), sorted by client id then
// filter; ok is false when clientID has no session here.
func (s *Server) Subscriptions(clientID string) (subs []ClientSubscription, ok bool) {
	var list []*session
	if clientID != "" {
		ss := s.sessionOf(clientID)
		if ss == nil {
			return nil, false
		}
		list = []*session{ss}
	} else {
		list = s.sessionList()
	}
	for _, ss := range list {
		ss.mu.Lock()
		if !ss.ended {
			ok = true
			for _, sub := range ss.subs {
				subs = append(subs, ClientSubscription{ClientID: ss.id, Subscription: sub})
			}
		}
		ss.mu.Unlock()
	}
	slices.SortFunc(subs, func(a, b ClientSubscription) int {
		return cmp.Or(strings.Compare(a.ClientID, b.ClientID), strings.Compare(a.Filter, b.Filter))
	})
	return subs, ok || clientID == ""
}

// Figures are gauges counted over the sessions.
type Figures struct {
	Connected           int64 // sessions with a connection
	Offline             int64 // persistent sessions without one
	Queued              int64 // messages waiting in session queues
	Inflight            int64 // messages sent and not yet acknowledged
	Subscriptions       int64
	SharedSubscriptions int64
	// Retained is the number of retained messages (the cluster's when
	// RetainedKnown and this broker is a cluster node).
	Retained      int64
	RetainedKnown bool
}

// Figures counts over every session now.
func (s *Server) Figures() Figures {
	var f Figures
	for _, ss := range s.sessionList() {
		ss.mu.Lock()
		if !ss.ended {
			if ss.conn != nil {
				f.Connected++
			} else {
				f.Offline++
			}
			f.Queued += int64(ss.queue.len())
			f.Inflight += int64(len(ss.inflight))
			f.Subscriptions += int64(len(ss.subs))
			for _, sub := range ss.subs {
				if sub.Group != "" {
					f.SharedSubscriptions++
				}
			}
		}
		ss.mu.Unlock()
	}
	if n, ok := s.retainedCount(); ok {
		f.Retained, f.RetainedKnown = int64(n), true
	}
	return f
}

// sessionOf returns the session of clientID, or nil.
func (s *Server) sessionOf(clientID string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[clientID]
}

// sessionList copies the session list under Server.mu.
func (s *Server) sessionList() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	return list
}

// addQoSOut adds the PUBLISHes the writer encoded since its last batch to
// Stats.MessagesOutQoS: a few atomic adds per write batch, none per
// message.
func (c *conn) addQoSOut() {
	for q, n := range c.qosOut {
		if n != 0 {
			c.srv.stats.MessagesOutQoS[q].Add(int64(n))
			c.qosOut[q] = 0
		}
	}
}
