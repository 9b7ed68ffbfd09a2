package node

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
	"github.com/mqcluster/mqcluster/transport"
)

// The node is the broker's cluster.
var _ broker.Cluster = (*Node)(nil)

// peerApplyWait bounds how long a route waits for one peer to apply it;
// a peer that takes longer is counted and left behind (SUBACK goes anyway).
const peerApplyWait = time.Second

// forwardWait bounds how long a publisher is held back while a connected
// peer's outbox is full; past it the message is dropped for that peer and
// counted (a 5.0 QoS 1/2 publisher gets 0x80).
const forwardWait = 2 * time.Second

// AttachBroker makes srv the broker that messages forwarded by other nodes
// are delivered to.
func (n *Node) AttachBroker(srv *broker.Server) { n.brk.Store(srv) }

// SetRoute records this node's route for filter through Raft and waits
// until every connected peer has applied it, so that a publish anywhere
// after the SUBACK reaches the new subscriber.
func (n *Node) SetRoute(ctx context.Context, filter string, members int) error {
	return n.setRoute(ctx, filter, "", members)
}

// SetShareRoute records this node's members of a share group, like
// SetRoute (broker.ShareCluster).
func (n *Node) SetShareRoute(ctx context.Context, filter, group string, members int) error {
	return n.setRoute(ctx, filter, group, members)
}

func (n *Node) setRoute(ctx context.Context, filter, group string, members int) error {
	idx, err := n.proposeApplied(ctx, &pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{
		NodeId: n.cfg.NodeID, Filter: filter, Group: group, Members: uint32(members)}}})
	if err != nil {
		return err
	}
	for _, peer := range n.peerIDs() {
		if !n.tr.PeerConnected(peer) {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, peerApplyWait)
		err := n.tr.WaitPeerApplied(wctx, peer, idx)
		cancel()
		if err != nil {
			n.lagging.Add(1)
			n.log.Warn("peer slow to apply a route; answering anyway", "peer", peer, "raft_index", idx, "err", err)
		}
	}
	return nil
}

// loseWillAcks makes the acknowledgements of that many forwarded wills
// count as lost, and dropWillSends that many wills not sent at all, as if
// the peers were cut off (tests).
var loseWillAcks, dropWillSends atomic.Int32

// willRetryFor bounds how long a node sends a will again to the nodes
// that did not acknowledge it.
const willRetryFor = 2 * time.Minute

// Forward sends m to every other node with a matching route. A will that
// does not reach every such node is sent again in the background, for
// willRetryFor: it has no publisher to do so (a node cut off just when it
// was published lost it: 2 wills in a partition run); the nodes that had
// it take it once (deliverer, seenWills).
func (n *Node) Forward(m *broker.Message, done func(error)) bool {
	if !m.Will {
		return n.forward(m, done)
	}
	lose := false
	if k := loseWillAcks.Load(); k > 0 && loseWillAcks.CompareAndSwap(k, k-1) {
		lose = true
	}
	if k := dropWillSends.Load(); k > 0 && dropWillSends.CompareAndSwap(k, k-1) {
		done(transport.ErrUnacknowledged)
		n.wg.Add(1)
		go n.forwardWillAgain(m)
		return true
	}
	return n.forward(m, func(err error) {
		if lose && err == nil {
			err = transport.ErrUnacknowledged
		}
		done(err)
		if err != nil {
			n.wg.Add(1)
			go n.forwardWillAgain(m)
		}
	})
}

// forwardWillAgain forwards will m again until every node with a route
// acknowledged it, willRetryFor passed, or no node routes it any more.
func (n *Node) forwardWillAgain(m *broker.Message) {
	defer n.wg.Done()
	deadline := time.Now().Add(willRetryFor)
	wait := time.Second
	for {
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		errc := make(chan error, 1)
		if !n.forward(m, func(err error) { errc <- err }) {
			return
		}
		err := <-errc
		if err == nil {
			n.log.Info("will forwarded to every node with a route after a retry", "topic", m.Topic)
			return
		}
		if time.Now().After(deadline) {
			n.log.Warn("will not forwarded to every node with a route; given up", "topic", m.Topic, "err", err)
			return
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// forward is Forward without the retry of wills.
func (n *Node) forward(m *broker.Message, done func(error)) bool {
	rc := routeCaches.Get().(*routeCache)
	matches := rc.match(n.fsm, m.Topic)
	routeCaches.Put(rc) // matches stays valid: cached matches are never modified
	var buf [4]fwdTarget
	targets := buf[:0]
	var shared map[string][]*pb.SharedTarget
	var cands map[shareKey][]string
	for i, r := range matches {
		if r.Members == 0 {
			continue
		}
		if r.Group != "" {
			if !m.SharesSet {
				shared = map[string][]*pb.SharedTarget{}
				cands = n.pickShares(m, matches[i:], shared)
			}
			continue
		}
		if r.NodeID != n.cfg.NodeID {
			targets = addTarget(targets, r.NodeID, true)
		}
	}
	for id := range shared {
		targets = addTarget(targets, id, false)
	}
	if len(targets) == 0 {
		return false
	}
	if len(targets) == 1 && len(shared) == 0 {
		// One node and no share group to re-send elsewhere: the common
		// case gets done straight from the transport, which copies the
		// message (no job, no callback of its own, nothing on the heap).
		var scratch [256]byte
		props, err := packet.AppendMessageProperties(scratch[:0], &m.Props)
		if err != nil {
			done(err)
			return true
		}
		props = noEmptyProps(props)
		// Fields set on the variable itself (not through a pointer) keep
		// scratch on the stack; the same fields as wireMessage.
		fm := pb.ForwardedMessage{Topic: m.Topic, Payload: m.Payload, Qos: uint32(m.QoS), Retain: m.Retain,
			Properties: props, OriginClientId: m.Origin, OriginNode: n.cfg.NodeID, MsgId: m.ID, Will: m.Will}
		if m.ExpiresAt != 0 {
			fm.ExpiresAtUnixMs = m.ExpiresAt / int64(time.Millisecond)
		}
		n.tr.SendWait(targets[0].peer, &fm, done, forwardWait)
		return true
	}
	props, err := packet.AppendMessageProperties(nil, &m.Props)
	if err != nil {
		done(err)
		return true
	}
	props = noEmptyProps(props)
	j := &forwardJob{n: n, m: m, props: props, done: done, cands: cands}
	j.left.Store(int32(len(targets)))
	for _, t := range targets {
		j.send(t.peer, shared[t.peer], !t.plain, nil)
	}
	return true
}

// routeCache holds the route matches of the topics forwarded recently, for
// one state machine at one applied index: a route changes only by a Raft
// entry, and an entry's changes are in the state machine before its index
// is applied, so matches computed after reading index i hold every route
// up to i. The caches come from a sync.Pool (one per processor, in
// practice), so a lookup takes no lock; the garbage collector empties the
// pool now and then, which costs a match per topic.
type routeCache struct {
	fsm   *fsm.FSM
	index uint64
	m     map[string][]fsm.RouteMatch // never modified once stored
}

// routeCacheTopics bounds the topics of one cache; past it, it starts over.
const routeCacheTopics = 512

var routeCaches = sync.Pool{New: func() any { return &routeCache{m: map[string][]fsm.RouteMatch{}} }}

// match returns the routes matching topic; the caller must not modify them.
func (c *routeCache) match(f *fsm.FSM, topic string) []fsm.RouteMatch {
	idx := f.AppliedIndex() // before matching: see routeCache
	if c.fsm != f || c.index != idx {
		clear(c.m)
		c.fsm, c.index = f, idx
	}
	if ms, ok := c.m[topic]; ok {
		return ms
	}
	ms := f.MatchRoutes(topic, nil)
	if len(c.m) >= routeCacheTopics {
		clear(c.m)
	}
	// The topic may be a view of the publisher's packet: kept as a copy.
	c.m[strings.Clone(topic)] = ms
	return ms
}

// fwdTarget is one node a message goes to; plain: for its own non-shared
// subscribers (not only for share groups).
type fwdTarget struct {
	peer  string
	plain bool
}

func addTarget(ts []fwdTarget, peer string, plain bool) []fwdTarget {
	for i := range ts {
		if ts[i].peer == peer {
			ts[i].plain = ts[i].plain || plain
			return ts
		}
	}
	return append(ts, fwdTarget{peer, plain})
}

// forwardJob is one message on its way to the other nodes. A node picked
// for a share group that cannot take the message is replaced by another
// node of the group, so that the group survives a member's node dying.
type forwardJob struct {
	n     *Node
	m     *broker.Message
	props []byte
	done  func(error)
	cands map[shareKey][]string
	left  atomic.Int32
	mu    sync.Mutex
	first error
}

// send forwards the message to peer, for the groups in shared and, unless
// sharedOnly, for peer's own non-shared subscribers. The caller has
// counted it in left.
func (j *forwardJob) send(peer string, shared []*pb.SharedTarget, sharedOnly bool, tried []string) {
	fm := wireMessage(j.m, j.props, j.n.cfg.NodeID)
	fm.Shared, fm.SharedOnly = shared, sharedOnly
	j.n.tr.SendWait(peer, fm, func(err error) {
		if err != nil && len(shared) > 0 {
			lost := j.reroute(shared, append(tried, peer))
			if sharedOnly && !lost {
				err = nil // every group found another node
			}
		}
		j.finish(err)
	}, forwardWait)
}

// reroute sends each group to another of its nodes; it reports whether a
// group had none left.
func (j *forwardJob) reroute(shared []*pb.SharedTarget, tried []string) (lost bool) {
	for _, g := range shared {
		alt := ""
		for _, id := range j.cands[shareKey{g.Filter, g.Group}] {
			if !slices.Contains(tried, id) {
				alt = id
				break
			}
		}
		switch alt {
		case "":
			lost = true
		case j.n.cfg.NodeID:
			j.left.Add(1)
			go j.local(g)
		default:
			j.left.Add(1)
			j.send(alt, []*pb.SharedTarget{g}, true, tried)
		}
	}
	return lost
}

// local delivers the message to this node's members of one group.
func (j *forwardJob) local(g *pb.SharedTarget) {
	b := j.n.brk.Load()
	if b == nil {
		j.finish(errNoBroker)
		return
	}
	c := *j.m
	c.SharesSet, c.SharedOnly = true, true
	c.Shares = []broker.ShareTarget{{Filter: g.Filter, Group: g.Group}}
	ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
	defer cancel()
	j.finish(b.DeliverForwarded(ctx, &c))
}

func (j *forwardJob) finish(err error) {
	if err != nil {
		j.mu.Lock()
		if j.first == nil {
			j.first = err
		}
		j.mu.Unlock()
	}
	if j.left.Add(-1) == 0 {
		j.mu.Lock()
		e := j.first
		j.mu.Unlock()
		j.done(e)
	}
}

// deliverer hands forwarded messages to the attached broker.
type deliverer struct{ n *Node }

func (d deliverer) DeliverForwarded(ctx context.Context, from string, msgs []transport.Message) error {
	b := d.n.brk.Load()
	if b == nil {
		return errNoBroker
	}
	ms := make([]*broker.Message, 0, len(msgs))
	var handed map[string]*handedOn
	var origins stringCache
	for i := range msgs {
		fm := &msgs[i]
		if len(fm.KickClientID) > 0 {
			b.Kick(string(fm.KickClientID))
			continue
		}
		if fm.Will && fm.MsgID != 0 && len(fm.ToClientID) == 0 && !d.n.seenWills.putNew(willKey{string(fm.OriginNode), fm.MsgID}, struct{}{}) {
			continue // sent again by a node that did not see it acknowledged
		}
		m := &broker.Message{QoS: byte(min(fm.QoS, 2)), Retain: fm.Retain, ID: fm.MsgID,
			Origin: origins.get(fm.OriginClientID), Will: fm.Will}
		m.Topic, m.Payload = ownedTopicPayload(fm.Topic, fm.Payload)
		switch node := fm.OriginNode; {
		case string(node) == d.n.cfg.NodeID:
			m.Node = ""
		case string(node) == from:
			m.Node = from
		default:
			m.Node = string(node)
		}
		// Share groups: this node serves those the ingress node picked it
		// for, and no other.
		m.SharesSet, m.SharedOnly = true, fm.SharedOnly
		if fm.NumShared() > 0 {
			for g, f := range fm.Shared() {
				m.Shares = append(m.Shares, broker.ShareTarget{Filter: string(f), Group: string(g)})
			}
		}
		if err := decodeProps(fm.Properties, &m.Props); err != nil {
			d.n.log.Warn("forwarded message with bad properties skipped", "peer", from, "topic", m.Topic, "err", err)
			continue
		}
		if fm.ExpiresAtUnixMs != 0 {
			m.ExpiresAt = fm.ExpiresAtUnixMs * int64(time.Millisecond)
		}
		if len(fm.ToClientID) > 0 {
			id := string(fm.ToClientID)
			if handed == nil {
				handed = map[string]*handedOn{}
			}
			h := handed[id]
			if h == nil {
				h = &handedOn{}
				handed[id] = h
			}
			h.ds = append(h.ds, broker.SessionDelivery{Msg: m, QoS: m.QoS, Retain: m.Retain, PacketID: uint16(fm.ToPacketID)})
			h.index, h.hops = max(h.index, fm.ToStateIndex), max(h.hops, fm.ToHops)
			continue
		}
		ms = append(ms, m)
	}
	for id, h := range handed {
		if err := d.n.takeHandedOn(ctx, b, from, id, h); err != nil {
			return err
		}
	}
	return b.DeliverForwardedBatch(ctx, ms)
}

// noEmptyProps is props, or nil for a block without properties (its
// length, 0, alone): a receiver decodes nil to no properties for free.
func noEmptyProps(props []byte) []byte {
	if len(props) == 1 && props[0] == 0 {
		return nil
	}
	return props
}

// decodeProps is packet.DecodeMessageProperties into a zero p, which it
// leaves alone (no copy, no clearing) when b holds no property.
func decodeProps(b []byte, p *packet.Properties) error {
	if len(b) == 0 || len(b) == 1 && b[0] == 0 {
		return nil
	}
	return packet.DecodeMessageProperties(b, p)
}

// ownedTopicPayload copies a forwarded message's topic and payload into one
// allocation: the topic is a string view of its start (never written
// again), the payload the rest.
func ownedTopicPayload(topic, payload []byte) (string, []byte) {
	if len(topic)+len(payload) == 0 {
		return "", nil
	}
	buf := make([]byte, len(topic)+len(payload))
	copy(buf, topic)
	copy(buf[len(topic):], payload)
	var t string
	if len(topic) > 0 {
		t = unsafe.String(&buf[0], len(topic))
	}
	var p []byte
	if len(payload) > 0 {
		p = buf[len(topic):]
	}
	return t, p
}

// stringCache turns the few client ids of a forwarded batch into strings,
// each once: a batch comes from a handful of publishers.
type stringCache struct {
	s    [16]string
	next int
}

func (c *stringCache) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for _, s := range c.s {
		if s == string(b) {
			return s
		}
	}
	s := string(b)
	c.s[c.next] = s
	c.next = (c.next + 1) % len(c.s)
	return s
}

// peerIDs lists the transport's peers.
func (n *Node) peerIDs() []string {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	ids := make([]string, 0, len(n.peers))
	for id := range n.peers {
		ids = append(ids, id)
	}
	return ids
}

// Retain sets or clears the retained message of m's topic through Raft.
func (n *Node) Retain(ctx context.Context, m *broker.Message) error {
	cmd := &pb.Command{}
	if len(m.Payload) == 0 {
		cmd.Op = &pb.Command_RetainedClear{RetainedClear: &pb.RetainedClear{Topic: m.Topic}}
	} else {
		props, err := packet.AppendMessageProperties(nil, &m.Props)
		if err != nil {
			return err
		}
		rs := &pb.RetainedSet{Topic: m.Topic, Payload: m.Payload, Qos: uint32(m.QoS), Properties: props,
			SetAtUnixMs: time.Now().UnixMilli()}
		if m.ExpiresAt != 0 {
			rs.ExpiresAtUnixMs = m.ExpiresAt / int64(time.Millisecond)
		}
		cmd.Op = &pb.Command_RetainedSet{RetainedSet: rs}
	}
	_, err := n.proposeApplied(ctx, cmd)
	return err
}

// Retained returns the live retained messages matching filter from this
// node's replica, sorted by topic.
func (n *Node) Retained(filter string) []*broker.Message {
	now := time.Now().UnixMilli()
	var out []*broker.Message
	for _, r := range n.fsm.RetainedMatching(filter) {
		if r.ExpiresAtUnixMs != 0 && r.ExpiresAtUnixMs <= now {
			continue
		}
		m := &broker.Message{Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: true}
		if err := packet.DecodeMessageProperties(r.Properties, &m.Props); err != nil {
			n.log.Warn("retained message with bad properties skipped", "topic", r.Topic, "err", err)
			continue
		}
		if r.ExpiresAtUnixMs != 0 {
			m.ExpiresAt = r.ExpiresAtUnixMs * int64(time.Millisecond)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *broker.Message) int { return strings.Compare(a.Topic, b.Topic) })
	return out
}

// ReconcileRoutes makes the routes the cluster holds for this node match
// the attached broker's local subscriptions: after a restart, routes of
// clean sessions that died with the previous run are removed, and the
// subscriptions of restored persistent sessions get their routes. It waits
// until a leader is in contact and this node has applied what it knows to
// be committed.
func (n *Node) ReconcileRoutes(ctx context.Context) error {
	b := n.brk.Load()
	if b == nil {
		return errNoBroker
	}
	for !n.inContact() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := n.waitCommitted(ctx); err != nil {
		return err
	}
	// Sessions restored from the store that moved to another node while
	// this one was down are no longer this node's: their messages follow
	// them.
	for _, id := range b.PersistentSessions() {
		cur, ok := n.fsm.Session(id)
		switch {
		case ok && cur.Owner != "" && cur.Owner != n.cfg.NodeID:
			// What it queued while this node was down goes to the owner.
			n.log.Info("restored session now owned by another node; handing it on", "client_id", id, "owner", cur.Owner)
			n.handOn(b, id, cur.Owner)
		case ok:
			b.SetSessionEpoch(id, cur.Epoch)
		}
	}
	local := map[string]bool{}
	for _, f := range b.RoutedFilters(n.holdsHere) {
		local[f] = true
	}
	have := n.ownRoutes()
	for f := range have {
		if !local[f] {
			if err := n.SetRoute(ctx, f, 0); err != nil {
				return err
			}
		}
	}
	for f := range local {
		if !have[f] {
			if err := n.SetRoute(ctx, f, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// pickShares chooses, for every share group among matches, the node whose
// members get m: the groups' nodes take turns (a member's node that cannot
// be reached is passed over while another can). The groups this node
// serves go into m.Shares, the others into shared by node. It runs once
// per message, before m is routed.
func (n *Node) pickShares(m *broker.Message, matches []fsm.RouteMatch, shared map[string][]*pb.SharedTarget) map[shareKey][]string {
	m.SharesSet = true
	type key = shareKey
	cands := map[key][]string{}
	var order []key
	for _, r := range matches {
		if r.Group == "" || r.Members == 0 {
			continue
		}
		k := key{r.Filter, r.Group}
		if _, ok := cands[k]; !ok {
			order = append(order, k)
		}
		if r.NodeID == n.cfg.NodeID || n.tr.PeerConnected(r.NodeID) {
			cands[k] = append(cands[k], r.NodeID)
		} else {
			cands[k] = append(cands[k], "")
		}
	}
	for _, k := range order {
		nodes := slices.DeleteFunc(cands[k], func(s string) bool { return s == "" })
		if len(nodes) == 0 {
			continue // every member's node is out of reach: nobody to send to
		}
		slices.Sort(nodes)
		cands[k] = nodes
		n.shareMu.Lock()
		turn := n.shareTurn[k.group+"\x00"+k.filter]
		n.shareTurn[k.group+"\x00"+k.filter] = turn + 1
		n.shareMu.Unlock()
		pick := nodes[turn%uint64(len(nodes))]
		if pick == n.cfg.NodeID {
			m.Shares = append(m.Shares, broker.ShareTarget{Filter: k.filter, Group: k.group})
			continue
		}
		shared[pick] = append(shared[pick], &pb.SharedTarget{Filter: k.filter, Group: k.group})
	}
	return cands
}

// shareKey names a share group of a filter.
type shareKey struct{ filter, group string }

// RetainedCount is the size of the replicated retained set (for $SYS).
func (n *Node) RetainedCount() int { return n.fsm.RetainedCount() }

// wireMessage is m as it travels to another node; props is m's encoded
// property block and ingress the node that received m from its publisher.
func wireMessage(m *broker.Message, props []byte, ingress string) *pb.ForwardedMessage {
	fm := &pb.ForwardedMessage{Topic: m.Topic, Payload: m.Payload, Qos: uint32(m.QoS), Retain: m.Retain,
		Properties: props, OriginClientId: m.Origin, OriginNode: ingress, MsgId: m.ID, Will: m.Will}
	if m.ExpiresAt != 0 {
		fm.ExpiresAtUnixMs = m.ExpiresAt / int64(time.Millisecond)
	}
	return fm
}

// ownRoutes is the set of filters the cluster routes to this node for its
// non-shared subscribers.
func (n *Node) ownRoutes() map[string]bool {
	have := map[string]bool{}
	for _, r := range n.fsm.RoutesOf(n.cfg.NodeID) {
		if r.Group == "" {
			have[r.Filter] = true
		}
	}
	return have
}

// holdsHere reports whether a session of clientID on this node is the
// cluster's: one the cluster does not know (an ephemeral session), or
// records as this node's. A copy of a session the cluster gave to another
// node (kept here across a partition, a pause or a move that did not
// finish) must not route that session's messages here: they reach the
// session where it lives, and a copy would hand them on there again.
func (n *Node) holdsHere(clientID string) bool {
	s, ok := n.fsm.Session(clientID)
	return !ok || s.Owner == "" || s.Owner == n.cfg.NodeID
}
