package node

import (
	"slices"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// Holders of a session (fsm.Session.Holders) are the nodes that may hold
// messages of it that its owner has not received: each claim adds the
// previous owner. A holder leaves once it handed those messages on (the
// second step of a move, or the hand-on of a copy it kept while cut off,
// killed or paused), or finds it holds none. Meanwhile the owner's broker
// holds the session's queue (broker/hold.go), so that the older messages
// are delivered first, as each publisher sent them.

// holdInterval paces the checks of held sessions and of this node's
// place among the holders.
const holdInterval = 250 * time.Millisecond

// otherHolders returns holders without this node and without skip.
func (n *Node) otherHolders(holders []string, skip string) []string {
	return slices.DeleteFunc(slices.Clone(holders), func(h string) bool { return h == n.cfg.NodeID || h == skip })
}

// handedOn records, in the background, that this node holds nothing more
// of clientID's session for its owner.
func (n *Node) handedOn(clientID string) {
	n.ops.add("h/"+clientID, &pb.Command{Ignorable: true, Op: &pb.Command_SessionHandedOn{SessionHandedOn: &pb.SessionHandedOn{
		ClientId: clientID, NodeId: n.cfg.NodeID}}})
}

// startHandingOn and doneHandingOn bracket the hand-on of a session's
// messages, while this node is still one of its holders.
func (n *Node) startHandingOn(clientID string) {
	n.handingMu.Lock()
	defer n.handingMu.Unlock()
	if n.handing == nil {
		n.handing = make(map[string]int)
	}
	n.handing[clientID]++
}

func (n *Node) doneHandingOn(clientID string) {
	n.handingMu.Lock()
	defer n.handingMu.Unlock()
	if n.handing[clientID]--; n.handing[clientID] <= 0 {
		delete(n.handing, clientID)
	}
}

func (n *Node) handingOn(clientID string) bool {
	n.handingMu.Lock()
	defer n.handingMu.Unlock()
	return n.handing[clientID] > 0
}

// holdLoop releases the held queues of sessions whose holders all handed
// on (or that left this node), and takes this node off the holders of
// sessions it holds nothing of.
func (n *Node) holdLoop() {
	defer n.wg.Done()
	t := time.NewTicker(holdInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.noteDown()
		b := n.brk.Load()
		if b == nil || !n.caughtUp() {
			continue
		}
		n.releaseHolds(b)
		n.leaveHolders(b)
	}
}

// upGrace is how long a holder that was down is still waited for once it
// is back: it hands on what it kept once it has caught up (adoptLoop,
// foreignGrace).
const upGrace = foreignGrace + 5*time.Second

// holdWorthy reports whether a session with these holders (besides this
// node and skip) should hold its queue: only for holders the cluster
// recorded as down (killed, paused, or cut off for NodeDownAfter), or that
// were within upGrace. A holder alive hands on what it has by itself (or
// the move's second step brings it), and waiting on one that is merely
// slow or briefly out of reach would stop delivery for nothing: in long
// runs of partitions that cost more messages than it put in order.
func (n *Node) holdWorthy(holders []string, skip string) bool {
	if n.cfg.SessionHold <= 0 {
		return false // holding is off
	}
	now := time.Now()
	for _, h := range n.otherHolders(holders, skip) {
		if n.outOfReach(h) {
			return true
		}
		n.downMu.Lock()
		t, ok := n.downSeen[h]
		n.downMu.Unlock()
		if ok && now.Sub(t) < upGrace {
			return true
		}
	}
	return false
}

// outOfReach reports whether the cluster records node as down.
func (n *Node) outOfReach(node string) bool {
	nd, ok := n.fsm.Node(node)
	return ok && (nd.State == fsm.NodeDown || nd.State == fsm.NodeRemoved)
}

// noteDown remembers when each node that holds a session's messages was
// last seen recorded as down.
func (n *Node) noteDown() {
	now := time.Now()
	var out []string
	for _, holders := range n.fsm.SessionHolders() {
		for _, h := range holders {
			if h != n.cfg.NodeID && !slices.Contains(out, h) && n.outOfReach(h) {
				out = append(out, h)
			}
		}
	}
	n.downMu.Lock()
	defer n.downMu.Unlock()
	for _, id := range out {
		if n.downSeen == nil {
			n.downSeen = make(map[string]time.Time)
		}
		n.downSeen[id] = now
	}
	for id, t := range n.downSeen {
		if now.Sub(t) > upGrace {
			delete(n.downSeen, id)
		}
	}
}

// releaseHolds ends the holds that are no longer needed (every holder that
// was down handed on, or has been back for upGrace) or have lasted
// Config.SessionHold.
func (n *Node) releaseHolds(b *broker.Server) {
	now := time.Now()
	for id, since := range b.HeldSessions() {
		s, ok := n.fsm.Session(id)
		if ok && s.Owner == n.cfg.NodeID && n.holdWorthy(s.Holders, "") {
			if now.Sub(since) < n.cfg.SessionHold {
				continue
			}
			n.log.Warn("session's queue held too long for a node that may hold older messages; delivering",
				"client_id", id, "holders", n.otherHolders(s.Holders, ""), "held", now.Sub(since).Round(time.Second))
			b.Stats().HoldsTimedOut.Add(1)
		}
		b.HoldRelease(id)
	}
}

// leaveHolders takes this node off the holders of the sessions it holds
// nothing of: not here, or here and not being handed over or on.
func (n *Node) leaveHolders(b *broker.Server) {
	for id, holders := range n.fsm.SessionHolders() {
		if !slices.Contains(holders, n.cfg.NodeID) || b.HasSession(id) || n.handingOn(id) {
			continue
		}
		n.handedOn(id)
	}
}
