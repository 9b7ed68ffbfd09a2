package broker

// The broker's side of the wills a SessionCluster keeps (handover.go): a
// will is registered when its connection is accepted and claimed before it
// is published, so that it goes once even when the cluster published it
// for a node it took for dead.

import (
	"context"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// cancelPendingWillLocked drops a will waiting for its delay. Caller holds
// ss.mu.
func (s *Server) cancelPendingWillLocked(ss *session) {
	if ss.willTimer != nil {
		ss.willTimer.Stop()
	}
	ss.willTimer, ss.pendingWill = nil, nil
	s.clearWill(ss.pendingWillID)
	ss.pendingWillID = ""
}

// clearWill drops a will's cluster record ("" : none).
func (s *Server) clearWill(id string) {
	if id == "" {
		return
	}
	if sc := s.sessionCluster(); sc != nil {
		sc.ClearWill(id)
	}
}

// PublishWill publishes a will the cluster fires for a connection of a node
// that died, and returns once it is in the sessions of this node's
// subscribers and every other node with a route has acknowledged it.
func (s *Server) PublishWill(ctx context.Context, m *Message) error {
	s.stats.MessagesIn.Add(1)
	if m.ID == 0 {
		// Named like every other message, so that a session that meets it
		// twice (forwarded, and passed on by a node it left) takes it once.
		m.ID = s.msgIDs.Add(1)
	}
	if m.Retain && s.cluster != nil {
		if err := s.cluster.Retain(ctx, m); err != nil {
			return err
		}
	}
	fwd := make(chan error, 1)
	if s.cluster == nil || !s.cluster.Forward(m, func(err error) { fwd <- err }) {
		fwd <- nil
	}
	placed := make(chan struct{})
	s.routeLocal(m, nil, nil, ackTo{done: placed}, false)
	select {
	case <-placed:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-fwd:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// registerWill hands the connection's will to the cluster, which publishes
// it should this node die before the connection ends.
func (c *conn) registerWill(cp *packet.Connect) {
	sc := c.srv.sessionCluster()
	if sc == nil || c.will == nil {
		return
	}
	_, expiry := c.srv.sessionLifetime(cp)
	c.willID = sc.SetWill(WillRecord{ClientID: c.clientID, Message: willMessage(c.will, c.clientID, time.Now()),
		Delay: c.will.Properties.WillDelay, SessionExpiry: expiry})
	id := c.willID
	c.willRef.Store(&id)
}

// publishWill publishes a connection's will, once: a will the cluster
// keeps is claimed first (the leader may have published it for a node it
// took for dead).
func (s *Server) publishWill(will *Message, id string) {
	sc := s.sessionCluster()
	if sc == nil || id == "" {
		s.publish(will, nil, nil, ackTo{})
		return
	}
	sc.ClaimWill(id, func(ok bool) {
		if ok {
			s.publish(will, nil, nil, ackTo{})
		}
	})
}
