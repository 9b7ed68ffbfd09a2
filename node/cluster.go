package node

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
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
	cmd, err := fsm.Encode(&pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{
		NodeId: n.cfg.NodeID, Filter: filter, Members: uint32(members)}}})
	if err != nil {
		return err
	}
	idx, err := n.Propose(ctx, cmd)
	if err != nil {
		return err
	}
	if err := n.fsm.WaitApplied(ctx, idx); err != nil {
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

// Forward sends m to every other node with a matching route.
func (n *Node) Forward(m *broker.Message, done func(error)) bool {
	matches := n.fsm.MatchRoutes(m.Topic, nil)
	var targets []string
	for _, r := range matches {
		if r.NodeID == n.cfg.NodeID || r.Group != "" || r.Members == 0 {
			continue
		}
		dup := false
		for _, t := range targets {
			if t == r.NodeID {
				dup = true
				break
			}
		}
		if !dup {
			targets = append(targets, r.NodeID)
		}
	}
	if len(targets) == 0 {
		return false
	}
	props, err := packet.AppendMessageProperties(nil, &m.Props)
	if err != nil {
		done(err)
		return true
	}
	var (
		left  atomic.Int32
		mu    sync.Mutex
		first error
	)
	left.Store(int32(len(targets)))
	for _, peer := range targets {
		fm := &pb.ForwardedMessage{Topic: m.Topic, Payload: m.Payload, Qos: uint32(m.QoS), Retain: m.Retain,
			Properties: props, OriginClientId: m.Origin, OriginNode: n.cfg.NodeID}
		if m.ExpiresAt != 0 {
			fm.ExpiresAtUnixMs = m.ExpiresAt / int64(time.Millisecond)
		}
		n.tr.SendWait(peer, fm, func(err error) {
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
			if left.Add(-1) == 0 {
				mu.Lock()
				e := first
				mu.Unlock()
				done(e)
			}
		}, forwardWait)
	}
	return true
}

// deliverer hands forwarded messages to the attached broker.
type deliverer struct{ n *Node }

func (d deliverer) DeliverForwarded(ctx context.Context, from string, msgs []*pb.ForwardedMessage) error {
	b := d.n.brk.Load()
	if b == nil {
		return errNoBroker
	}
	for _, fm := range msgs {
		m := &broker.Message{Topic: fm.Topic, Payload: fm.Payload, QoS: byte(min(fm.Qos, 2)), Retain: fm.Retain, Origin: fm.OriginClientId}
		if err := packet.DecodeMessageProperties(fm.Properties, &m.Props); err != nil {
			d.n.log.Warn("forwarded message with bad properties skipped", "peer", from, "topic", fm.Topic, "err", err)
			continue
		}
		if fm.ExpiresAtUnixMs != 0 {
			m.ExpiresAt = fm.ExpiresAtUnixMs * int64(time.Millisecond)
		}
		if err := b.DeliverForwarded(ctx, m); err != nil {
			return err
		}
	}
	return nil
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
	b, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	idx, err := n.Propose(ctx, b)
	if err != nil {
		return err
	}
	return n.fsm.WaitApplied(ctx, idx)
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
	if err := n.fsm.WaitApplied(ctx, n.raft.CommitIndex()); err != nil {
		return err
	}
	local := map[string]bool{}
	for _, f := range b.RoutedFilters() {
		local[f] = true
	}
	have := map[string]bool{}
	for _, r := range n.fsm.RoutesOf(n.cfg.NodeID) {
		if r.Group != "" {
			continue
		}
		have[r.Filter] = true
		if !local[r.Filter] {
			if err := n.SetRoute(ctx, r.Filter, 0); err != nil {
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
