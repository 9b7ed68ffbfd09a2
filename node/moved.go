package node

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
	"github.com/mqcluster/mqcluster/fsm"
)

// moveRouteWait bounds how long the previous owner of a session that moves
// waits, before it lets the session go, for its copy of the cluster's
// state to route the session's subscriptions to the new owner.
const moveRouteWait = 3 * time.Second

// awaitMovedRoutes waits until this node routes every subscription of
// clientID's session (claimed at epoch or later) to owner, or until
// moveRouteWait or ctx ends. Until then a message published here for the
// session still reaches its copy here, which hands it over; once that copy
// is gone, only the route to the new owner can take it there. A node that
// lags behind the log (a slow link) would otherwise route such messages
// nowhere between the two.
func (n *Node) awaitMovedRoutes(ctx context.Context, clientID, owner string, epoch uint64) {
	limit := moveRouteWait
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)-200*time.Millisecond)
	}
	deadline := time.NewTimer(max(limit, 0))
	defer deadline.Stop()
	for {
		changed := n.fsm.Changed(fsm.KindAny)
		if n.routesMoved(clientID, owner, epoch) {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			n.log.Warn("moving session: this node does not route its subscriptions to the new owner yet; letting it go",
				"client_id", clientID, "owner", owner, "waited", limit.String())
			return
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		}
	}
}

// routesMoved reports whether this node's state has the claim of clientID's
// session at epoch (or a later one) and a route to owner for each of its
// subscriptions.
func (n *Node) routesMoved(clientID, owner string, epoch uint64) bool {
	s, ok := n.fsm.Session(clientID)
	if !ok || s.Epoch < epoch {
		return false
	}
	for _, sub := range s.Subscriptions {
		group, real, _, err := topic.ParseShare(sub.Filter)
		if err != nil {
			continue
		}
		r, ok := n.fsm.Route(real, group)
		if !ok || !slices.ContainsFunc(r.Nodes, func(rn fsm.RouteNode) bool { return rn.NodeID == owner && rn.Members > 0 }) {
			return false
		}
	}
	return true
}

// failPassOns makes that many PassOn calls fail as if the owner did not
// answer (tests).
var failPassOns atomic.Int32

// passOnTime is how long a node passes on the messages that still reach it
// for a session that moved to another node: long enough for nodes that
// were cut off from the leader meanwhile to learn the new routes.
const passOnTime = 30 * time.Second

// PassOn sends a delivery for the session of clientID to owner, the node
// it moved to, on the forwarding stream (broker.SessionCluster).
func (n *Node) PassOn(owner, clientID string, d broker.SessionDelivery, done func(error)) {
	n.passOn(owner, clientID, d, 0, done)
}

// passOn is PassOn for a delivery that nodes without the session passed
// on hops times already.
func (n *Node) passOn(owner, clientID string, d broker.SessionDelivery, hops uint32, done func(error)) {
	if k := failPassOns.Load(); k > 0 && failPassOns.CompareAndSwap(k, k-1) {
		done(errors.New("not passed on (test)"))
		return
	}
	m := d.Msg
	props, err := packet.AppendMessageProperties(nil, &m.Props)
	if err != nil {
		done(err)
		return
	}
	ingress := m.Node
	if ingress == "" {
		ingress = n.cfg.NodeID
	}
	fm := wireMessage(m, props, ingress)
	fm.Qos, fm.Retain, fm.ToClientId, fm.ToPacketId = uint32(d.QoS), d.Retain, clientID, uint32(d.PacketID)
	fm.ToStateIndex, fm.ToHops = n.fsm.AppliedIndex(), hops
	n.tr.SendWait(owner, fm, done, forwardWait)
}
