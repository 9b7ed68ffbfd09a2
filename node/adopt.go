package node

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// adoptInterval paces the checks for sessions whose node died.
const adoptInterval = time.Second

// foreignGrace is how long a session this node holds offline may be
// recorded as another node's before it is dropped here: long enough for
// the new owner to finish taking it over (which needs it here).
const foreignGrace = 30 * time.Second

// adoptLoop gives the persistent sessions of dead nodes a live owner, and
// lets go of sessions held here that the cluster gave to another node.
func (n *Node) adoptLoop() {
	defer n.wg.Done()
	t := time.NewTicker(adoptInterval)
	defer t.Stop()
	foreign := map[string]time.Time{}
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		b := n.brk.Load()
		if b == nil || !n.inContact() {
			continue
		}
		n.adoptOrphans(b)
		n.dropForeign(b, foreign)
	}
}

// adoptOrphans claims, for this node, the persistent sessions of nodes
// recorded as down (or removed) that fall to it: every node computes the
// same choice among the live members, and the epoch of the claim settles
// any disagreement.
func (n *Node) adoptOrphans(b *broker.Server) {
	down := map[string]int64{}
	for _, nd := range n.fsm.Nodes() {
		if nd.State == fsm.NodeDown || nd.State == fsm.NodeRemoved {
			down[nd.ID] = nd.DownAtUnixMs
		}
	}
	if len(down) == 0 {
		return
	}
	var alive []string
	for _, m := range n.members() {
		if _, d := down[m.id]; !d {
			alive = append(alive, m.id)
		}
	}
	for _, s := range n.fsm.Sessions() {
		at, isDown := down[s.Owner]
		if !isDown && s.Owner != "" {
			continue
		}
		if pickNode(s.ClientID, alive) != n.cfg.NodeID || b.HasSession(s.ClientID) {
			continue
		}
		n.adopt(b, s, at)
	}
}

// pickNode chooses one of nodes (sorted) for a client id.
func pickNode(clientID string, nodes []string) string {
	if len(nodes) == 0 {
		return ""
	}
	h := fnv.New32a()
	h.Write([]byte(clientID))
	return nodes[h.Sum32()%uint32(len(nodes))]
}

func (n *Node) adopt(b *broker.Server, s fsm.Session, downAt int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	disconnected := s.DisconnectedAtUnixMs
	if s.Connected || disconnected == 0 {
		disconnected = downAt
	}
	if s.ExpirySeconds != ^uint32(0) && time.Now().UnixMilli() >= disconnected+int64(s.ExpirySeconds)*1000 {
		cmd, _ := fsm.Encode(&pb.Command{Op: &pb.Command_SessionDelete{SessionDelete: &pb.SessionDelete{ClientId: s.ClientID, Epoch: s.Epoch}}})
		n.Propose(ctx, cmd)
		return
	}
	epoch := n.fsm.NextEpoch()
	claim, _ := fsm.Encode(&pb.Command{Op: &pb.Command_SessionClaim{SessionClaim: &pb.SessionClaim{
		ClientId: s.ClientID, NodeId: n.cfg.NodeID, Epoch: epoch, ExpirySeconds: s.ExpirySeconds}}})
	if _, err := n.Propose(ctx, claim); err != nil {
		n.log.Debug("orphaned session not claimed", "client_id", s.ClientID, "err", err)
		return
	}
	expiry := s.ExpirySeconds
	release, _ := fsm.Encode(&pb.Command{Op: &pb.Command_SessionRelease{SessionRelease: &pb.SessionRelease{
		ClientId: s.ClientID, Epoch: epoch, DisconnectedAtUnixMs: disconnected, ExpirySeconds: &expiry}}})
	if _, err := n.Propose(ctx, release); err != nil {
		n.log.Debug("adopted session not released", "client_id", s.ClientID, "err", err)
	}
	b.AdoptOffline(&broker.SessionRecord{ClientID: s.ClientID, Expiry: s.ExpirySeconds,
		DisconnectedAt: disconnected * int64(time.Millisecond), Subscriptions: brokerSubscriptions(s.Subscriptions)}, epoch)
}

// dropForeign drops offline sessions held here that the cluster records
// as another node's for longer than foreignGrace.
func (n *Node) dropForeign(b *broker.Server, foreign map[string]time.Time) {
	now := time.Now()
	held := map[string]bool{}
	for _, id := range b.OfflineSessions() {
		held[id] = true
		s, ok := n.fsm.Session(id)
		if !ok || s.Owner == "" || s.Owner == n.cfg.NodeID {
			delete(foreign, id)
			continue
		}
		first, seen := foreign[id]
		if !seen {
			foreign[id] = now
			continue
		}
		if now.Sub(first) >= foreignGrace {
			n.log.Info("session owned by another node dropped here", "client_id", id, "owner", s.Owner)
			b.DropSession(id)
			delete(foreign, id)
		}
	}
	for id := range foreign {
		if !held[id] {
			delete(foreign, id)
		}
	}
}
