package node

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/topic"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// adoptInterval paces the checks for sessions whose node died.
const adoptInterval = time.Second

// foreignGrace is how long a session this node holds offline may be
// recorded as another node's before it is handed on from here: the new
// owner's own takeover, when it reaches this node, comes first.
const foreignGrace = 5 * time.Second

// routedGrace is foreignGrace when the new owner already routes the
// session's subscriptions: its takeover is past its first step, or it
// took the session without this node (cut off then).
const routedGrace = 2 * time.Second

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
		if b == nil || !n.inContact() || !n.caughtUp() {
			// A node behind the log (a slow link) would act on owners the
			// cluster has replaced since.
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
		ClientId: s.ClientID, NodeId: n.cfg.NodeID, Epoch: epoch, ExpirySeconds: s.ExpirySeconds,
		ClaimedAtUnixMs: time.Now().UnixMilli()}}})
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
	// The dead owner joined the holders with this claim: the queue waits
	// for what it kept until it is back (or Config.SessionHold).
	hold := n.holdWorthy(append(s.Holders, s.Owner), "")
	b.AdoptOffline(&broker.SessionRecord{ClientID: s.ClientID, Expiry: s.ExpirySeconds,
		DisconnectedAt: disconnected * int64(time.Millisecond), Subscriptions: brokerSubscriptions(s.Subscriptions)}, epoch, hold)
}

// dropForeign drops offline sessions held here that the cluster records
// as another node's for longer than foreignGrace, or routedGrace when that
// node routes every subscription of the session itself: the copy here would
// only collect again what reaches the session there (local publishers
// keep delivering into it), and hand it on as duplicates. The grace is
// for the owner's own takeover to reach this node first; it counts from
// the claim when this node applied the claim late. A move whose
// second step has not come for foreignGrace while the owner routes the
// session ends the same way (the new node gave up waiting for it).
func (n *Node) dropForeign(b *broker.Server, foreign map[string]time.Time) {
	now := time.Now()
	held := map[string]bool{}
	// ownerOf returns the cluster's record of session id when it names
	// another node as the owner (a zero Session otherwise), and how long
	// these checks have seen it so (0 the first time); with fromClaim,
	// since the claim when its time is known and earlier (this node
	// applied it late, cut off then: the owner's takeover gave up on
	// reaching it meanwhile).
	ownerOf := func(id string, fromClaim bool) (fsm.Session, time.Duration) {
		held[id] = true
		s, ok := n.fsm.Session(id)
		if !ok || s.Owner == "" || s.Owner == n.cfg.NodeID {
			delete(foreign, id)
			return fsm.Session{}, 0
		}
		first, seen := foreign[id]
		if !seen {
			first = now
			foreign[id] = now
		}
		if fromClaim && s.ClaimedAtUnixMs > 0 {
			if at := time.UnixMilli(s.ClaimedAtUnixMs); at.Before(first) {
				first = at
			}
		}
		return s, now.Sub(first)
	}
	routes := map[string]map[string]bool{} // owner -> its routed filters, read once per check
	for _, id := range b.OfflineSessions() {
		s, since := ownerOf(id, true)
		if s.Owner == "" {
			continue
		}
		grace := foreignGrace
		if n.routesAll(routes, s.Owner, s.Subscriptions) {
			grace = routedGrace
		}
		if since >= grace && n.tr.PeerConnected(s.Owner) {
			n.handOn(b, id, s.Owner)
			delete(foreign, id)
		}
	}
	for _, id := range b.MovingSessions() {
		s, since := ownerOf(id, false)
		if s.Owner == "" {
			continue
		}
		if !n.routesAll(routes, s.Owner, s.Subscriptions) {
			delete(foreign, id)
			continue
		}
		if since >= foreignGrace && n.tr.PeerConnected(s.Owner) {
			n.log.Info("move not finished by the session's owner, which routes it; ending it", "client_id", id, "owner", s.Owner)
			b.EndMove(id)
			delete(foreign, id)
		}
	}
	for id := range foreign {
		if !held[id] {
			delete(foreign, id)
		}
	}
}

// routesAll reports whether the cluster routes every non-shared
// subscription of subs to node; routes caches each node's routed filters
// across calls.
func (n *Node) routesAll(routes map[string]map[string]bool, node string, subs []fsm.Subscription) bool {
	routed, ok := routes[node]
	if !ok {
		routed = map[string]bool{}
		for _, r := range n.fsm.RoutesOf(node) {
			if r.Group == "" {
				routed[r.Filter] = true
			}
		}
		routes[node] = routed
	}
	own := 0
	for _, sub := range subs {
		group, real, _, err := topic.ParseShare(sub.Filter)
		if err != nil || group != "" {
			continue
		}
		own++
		if !routed[real] {
			return false
		}
	}
	return own > 0
}

// handOn ends a session held here that the cluster gave to owner, and
// sends what it held to the session there (this node was cut off while
// its client went elsewhere).
func (n *Node) handOn(b *broker.Server, id, owner string) {
	rec, ok := b.Surrender(id, owner, passOnTime)
	if !ok {
		return
	}
	n.globalize(rec)
	copies := n.dropCopies(b, rec)
	// A QoS 2 message that may have reached the client keeps its packet
	// id, so that the owner sends it again as the same flow; one whose
	// PUBREL went out is the client's already. The owner skips those it
	// delivered or holds.
	ds, released := broker.HandOnDeliveries(rec)
	n.log.Info("session owned by another node handed on", "client_id", id, "owner", owner, "messages", len(ds),
		"qos2_released_kept", released, "qos2_copies_dropped", copies)
	if len(ds) == 0 {
		n.handedOn(id)
		return
	}
	n.sendOn(b, id, owner, ds, 0, func() { n.handedOn(id) })
}

// claimSkew is how far apart the clocks of two nodes may be when one
// compares a claim's time (fsm Session.ClaimedAtUnixMs) with its own.
const claimSkew = time.Second

// dropCopies takes out of rec, a session handed on to the owner the
// cluster records (or handed over to it by a move it asked for), the QoS 2
// messages its copy here collected since this node started when that
// owner had claimed the session before: the owner
// routed them to itself all along, and its client has them or will. Only
// another subscription here brought them to the copy (a restarted node's
// restored sessions take what matches while it catches up). Handed on,
// they would reach the client twice once the session comes back here
// without the owner's record of what it delivered (that node dead),
// [MQTT-4.3.3-2]: 85 QoS 2 duplicates in a jepsen-lite kill run. What was
// restored from this node's store it may hold alone, and goes on. QoS 1
// messages go on too: the owner meets the ones it delivered lately once.
// It returns how many it took out.
func (n *Node) dropCopies(b *broker.Server, rec *broker.SessionRecord) int {
	cur, ok := n.fsm.Session(rec.ClientID)
	if !ok || cur.Owner == n.cfg.NodeID || cur.ClaimedAtUnixMs == 0 ||
		!time.UnixMilli(cur.ClaimedAtUnixMs).Before(b.StartedAt().Add(-claimSkew)) {
		return 0
	}
	kept := rec.Messages[:0]
	for _, sm := range rec.Messages {
		if sm.QoS == 2 && !sm.Restored {
			continue
		}
		kept = append(kept, sm)
	}
	dropped := len(rec.Messages) - len(kept)
	clear(rec.Messages[len(kept):])
	rec.Messages = kept
	if dropped > 0 {
		b.Stats().PassOnFailures.Add(int64(dropped))
	}
	return dropped
}

// sendOn delivers ds to the session of id at owner in the background
// (deliverHandedOn), while the node counts as handing it on, and then
// runs then (nil: nothing). hops counts the nodes without the session
// that passed ds on before.
func (n *Node) sendOn(b *broker.Server, id, owner string, ds []broker.SessionDelivery, hops uint32, then func()) {
	n.startHandingOn(id)
	n.wg.Add(1)
	go func() {
		n.deliverHandedOn(b, id, owner, ds, hops)
		n.doneHandingOn(id)
		if then != nil {
			then()
		}
	}()
}

// handOnFor bounds how long a node keeps trying to hand a session's
// messages on to its owner.
const handOnFor = 2 * time.Minute

// deliverHandedOn sends handed-on messages to the session's owner until it
// has them all: the link to it may fail just then (a partition starting),
// and the messages exist nowhere else. Each retry goes to the owner the
// cluster records at that time, this node included.
func (n *Node) deliverHandedOn(b *broker.Server, id, owner string, ds []broker.SessionDelivery, hops uint32) {
	defer n.wg.Done()
	deadline := time.Now().Add(handOnFor)
	wait := time.Second
	for {
		if owner == n.cfg.NodeID {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			n.ownSession(b, id)
			if err := b.DeliverToSession(ctx, id, ds); errors.Is(err, broker.ErrNoSession) {
				b.Stats().PassOnFailures.Add(int64(len(ds)))
				n.log.Warn("handed-on messages for a session this node owns but does not hold (ended or expired here); dropped",
					"client_id", id, "messages", len(ds))
			}
			cancel()
			return
		}
		ds = n.sendHandedOn(owner, id, ds, hops)
		if len(ds) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Stats().PassOnFailures.Add(int64(len(ds)))
			n.log.Warn("handed-on messages not delivered to the session's owner; dropped",
				"client_id", id, "owner", owner, "messages", len(ds))
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
		if s, ok := n.fsm.Session(id); ok && s.Owner != "" {
			owner = s.Owner
		}
	}
}

// sendHandedOn sends ds to the session of id on owner and returns those
// that owner did not acknowledge, in order.
func (n *Node) sendHandedOn(owner, id string, ds []broker.SessionDelivery, hops uint32) []broker.SessionDelivery {
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	wg.Add(len(ds))
	for i, d := range ds {
		n.passOn(owner, id, d, hops, func(err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	var failed []broker.SessionDelivery
	for i, err := range errs {
		if err != nil {
			failed = append(failed, ds[i])
		}
	}
	if len(failed) > 0 {
		if k := n.retried.add(id, len(failed)); k > 0 {
			n.log.Warn("handed-on messages not acknowledged by the session's owner; retrying",
				"client_id", id, "owner", owner, "messages", k, "err", errs[slices.IndexFunc(errs, func(e error) bool { return e != nil })])
		}
	}
	return failed
}

// HandOnRest hands on to the session's owner the messages a session
// collected here after it left for a node that never finished the move
// (broker.SessionCluster): that node died, or lost the session to another
// claim, before it asked for them. What the move's first step carried goes
// too when the session lives elsewhere (its QoS 2 messages only when that
// node is recorded down): the node may have died in the middle of the
// move with the session's queue, and the session's client, back on
// another node, would get it only once that node is back (after the
// session's expiry, for a short one: 97 messages of the 8 s subscriber in
// a kill run), or never (not stored yet). A node that died after its
// client had some of them makes those come twice.
func (n *Node) HandOnRest(clientID string, rec *broker.SessionRecord, first broker.FirstStep) {
	b := n.brk.Load()
	cur, ok := n.fsm.Session(clientID)
	if b == nil || !ok || cur.Owner == "" {
		n.log.Warn("rest of a moved session dropped: the cluster records no owner", "client_id", clientID, "messages", len(rec.Messages))
		return
	}
	if len(first.Messages) > 0 && cur.Owner != first.To {
		// The QoS 2 ones only when that node is recorded down: it may
		// have delivered them, and only its own hand-on, once it is
		// back, tells which. QoS 0 and 1 ones go in any case: that node
		// may have died before it stored them (16 lost in a kill run,
		// the node not yet recorded down when the move ended); where
		// it kept them, they reach the owner twice at most.
		down, _ := n.fsm.Node(first.To)
		var carried []broker.StoredMessage
		for _, sm := range first.Messages {
			if sm.QoS < 2 || down.State == fsm.NodeDown {
				carried = append(carried, sm)
			}
		}
		if len(carried) > 0 {
			n.log.Warn("the node a session moved to never finished the move; what the move's first step carried goes to the session's owner too",
				"client_id", clientID, "first_step_to", first.To, "down", down.State == fsm.NodeDown, "owner", cur.Owner,
				"messages", len(carried), "of", len(first.Messages))
			rec.Messages = append(carried, rec.Messages...)
		}
	}
	n.globalize(rec)
	if ds, _ := broker.HandOnDeliveries(rec); len(ds) > 0 {
		n.sendOn(b, clientID, cur.Owner, ds, 0, nil)
	}
}
