package node

import (
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/fsm"
)

// claimsLoop closes the connections of persistent sessions that another
// node has claimed since ([MQTT-3.1.4-3] across the cluster). The new owner
// also tells this node on the forwarding stream, but that order is lost
// when this node was paused or cut off at the time; the claim, applied
// from the log once it is back, is not.
func (n *Node) claimsLoop() {
	defer n.wg.Done()
	for {
		changed := n.fsm.Changed(fsm.KindSessions)
		select {
		case <-n.stop:
			return
		case <-changed:
		}
		// Claims come in bursts (a connect storm): look once per burst.
		select {
		case <-n.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		b := n.brk.Load()
		if b == nil {
			continue
		}
		for id, epoch := range b.ConnectedClaims() {
			if s, ok := n.fsm.Session(id); ok && s.Epoch > epoch && s.Owner != n.cfg.NodeID {
				n.log.Info("session claimed by another node; closing its connection here",
					"client_id", id, "owner", s.Owner, "epoch", s.Epoch, "local_epoch", epoch)
				b.Kick(id)
			}
		}
	}
}

// ownSession installs, offline, the session of clientID when the cluster
// records this node as its owner and the broker has none: the claim was
// committed after this node had given up on the connection that made it
// (its proposal timed out), and messages handed on to the session must
// have somewhere to wait for its client.
func (n *Node) ownSession(b *broker.Server, clientID string) {
	if b.HasSession(clientID) {
		return
	}
	s, ok := n.fsm.Session(clientID)
	if !ok || s.Owner != n.cfg.NodeID {
		return
	}
	now := time.Now()
	if hasEpoch(&n.ended, clientID, s.Epoch) {
		// It ended here (expired) before the cluster recorded the end:
		// installing it would revive it with a new expiry.
		n.log.Info("handed-on messages for a session that ended here; not installed", "client_id", clientID, "epoch", s.Epoch)
		return
	}
	if sessionExpired(s, now) {
		// Past its expiry: the session is over, and what is handed on
		// to it with it ([MQTT-4.1.0-2]); installing it would start its
		// expiry again.
		n.log.Info("handed-on messages for a session past its expiry; not installed", "client_id", clientID)
		return
	}
	disconnected := now
	if !s.Connected && s.DisconnectedAtUnixMs != 0 {
		disconnected = time.UnixMilli(s.DisconnectedAtUnixMs) // its expiry runs from then
	}
	n.log.Info("session this node was recorded to own installed for messages handed on to it", "client_id", clientID, "epoch", s.Epoch)
	b.AdoptOffline(&broker.SessionRecord{ClientID: clientID, Expiry: s.ExpirySeconds,
		DisconnectedAt: disconnected.UnixNano(), Subscriptions: brokerSubscriptions(s.Subscriptions)}, s.Epoch,
		n.holdWorthy(s.Holders, ""))
	if s.Connected && !hasEpoch(&n.live, clientID, s.Epoch) {
		// The connection that claimed it here is gone. One that claimed
		// it lately may still be taking it over from its previous node
		// (its CONNECT waits for that node): it meets this copy as a
		// stale one, whose messages join it; recording a release would
		// make the cluster count the session's expiry from now while its
		// client is connected (a client back 8 s later found no session,
		// session present 0).
		n.ReleaseSession(clientID, s.Epoch, s.ExpirySeconds)
	}
}

// liveClaimFor is how long a node remembers the claims it committed for a
// connection (Node.live): until the broker installs the session, such a
// claim is a connection still taking the session over (its CONNECT waits
// for the previous node); a claim committed after its proposal timed out
// is not remembered (ownSession). It outlasts a CONNECT's claim and
// takeover (the cluster timeout and the takeover's).
const liveClaimFor = 30 * time.Second
