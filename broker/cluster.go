package broker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// Cluster is what a broker that is one node of a cluster asks of the
// cluster; the node implements it. A broker without one (Options.Cluster
// nil) is alone.
//
// Retained messages live in the cluster's replicated state, identical on
// every node.
//
// Routes are per filter: this node tells the cluster when its first local
// subscriber of a filter appears and when its last goes, and the cluster
// sends it every message published elsewhere whose topic the filter
// matches (DeliverForwarded). A cluster may also move sessions and keep
// wills (SessionCluster) and balance share groups across nodes
// (ShareCluster).
type Cluster interface {
	// SetRoute records that this node has members local subscribers of
	// filter (0: none left). It returns once the route is in force on every
	// node that can be reached, or an error when it cannot be recorded (no
	// quorum): the SUBACK then refuses the filter.
	SetRoute(ctx context.Context, filter string, members int) error
	// Forward sends m to every other node with a route matching its topic
	// and calls done once all of them have queued it, with the first
	// failure if one did not. It reports false, and does not call done,
	// when no other node needs m.
	Forward(m *Message, done func(error)) bool
	// Retain sets the retained message of m's topic cluster-wide, or
	// clears it when m's payload is empty, and returns once that is
	// committed and applied on this node.
	Retain(ctx context.Context, m *Message) error
	// Retained returns the live retained messages whose topics match
	// filter, from this node's copy of the replicated set, sorted by topic.
	Retained(filter string) []*Message
}

// DeliverForwarded delivers a message that another node forwarded to this
// node's local subscribers, and returns once it is in their sessions —
// durably for stored sessions — so that the node acknowledges it to the
// sender only then; or when ctx ends. It is not forwarded again, and it
// changes no retained state here (the node that received it from its
// publisher keeps that).
func (s *Server) DeliverForwarded(ctx context.Context, m *Message) error {
	return s.DeliverForwardedBatch(ctx, []*Message{m})
}

// DeliverForwardedBatch is DeliverForwarded for several messages, in
// order; it returns once all of them are placed.
func (s *Server) DeliverForwardedBatch(ctx context.Context, ms []*Message) error {
	s.stats.MessagesIn.Add(int64(len(ms)))
	b := &placedBatch{done: make(chan struct{})}
	b.left.Store(int32(len(ms)) + 1)
	for _, m := range ms {
		s.routeLocal(m, nil, nil, ackTo{batch: b}, false)
	}
	b.placed()
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// placedBatch closes done once every message of a forwarded batch is
// placed (one more count is held by the deliverer until it has routed
// them all).
type placedBatch struct {
	left atomic.Int32
	done chan struct{}
}

func (b *placedBatch) placed() {
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

// forward hands m to the cluster. For a QoS 1/2 message from a client the
// returned ack waits for the other nodes too; a forward that failed turns a
// 5.0 acknowledgement into 0x80 (the message did not reach every node).
func (s *Server) forward(m *Message, ack ackTo) ackTo {
	if s.cluster == nil {
		return ack
	}
	if m.QoS == 0 || ack.c == nil {
		s.cluster.Forward(m, func(err error) { s.forwardFailed(m, err) })
		return ack
	}
	j := &joinAcks{ack: ack, srv: s}
	j.left.Store(2)
	if !s.cluster.Forward(m, func(err error) {
		if err != nil {
			s.forwardFailed(m, err)
			j.failed.Store(true)
		}
		j.done()
	}) {
		return ack
	}
	return ackTo{join: j}
}

func (s *Server) forwardFailed(m *Message, err error) {
	if err == nil {
		return
	}
	n := s.stats.ForwardFailures.Add(1)
	// One line per second at most: a peer that cannot keep up fails many
	// messages, and logging each would only add to the load.
	now := time.Now().UnixNano()
	last := s.forwardLogged.Load()
	if now-last >= int64(time.Second) && s.forwardLogged.CompareAndSwap(last, now) {
		s.log.Warn("messages not forwarded to every node", "topic", m.Topic, "err", err, "failures_total", n)
	}
}

// unacknowledged answers a 3.1.1 publisher whose message did not reach
// every node that should have it: its PUBACK / PUBREC cannot say so, and
// acknowledging would tell it the message is safe. The connection closes
// instead ([MQTT-3.3.5-2] lets the server close rather than acknowledge);
// the client sends the message again on its next connection — at least
// once: subscribers that had it may get it twice.
func (c *conn) unacknowledged(t packet.Type, id uint16) {
	if t == packet.PUBREC {
		// Not received after all: the resent PUBLISH must be routed again.
		if ss := c.sess; ss != nil {
			ss.mu.Lock()
			delete(ss.awaitingRel, id)
			ss.mu.Unlock()
		}
	}
	c.srv.log.Info("closing a 3.1.1 connection instead of acknowledging a message some node did not accept",
		"client_id", c.clientID, "packet_id", id)
	c.closeNow()
}

// joinAcks calls ack once both the local delivery and the cluster's
// forwarding of one message have finished.
type joinAcks struct {
	left   atomic.Int32
	failed atomic.Bool
	ack    ackTo
	srv    *Server
}

func (j *joinAcks) done() {
	if j.left.Add(-1) != 0 {
		return
	}
	j.finish()
}

// finish is the failure-aware end of a joinAcks: the publisher's 5.0
// acknowledgement says 0x80 when the message did not reach every node; a
// 3.1.1 publisher, whose PUBACK cannot say so, gets none (unacknowledged).
func (j *joinAcks) finish() {
	a := j.ack
	switch {
	case a.join != nil:
		if j.failed.Load() {
			a.join.failed.Store(true)
		}
		a.join.done()
	case a.c != nil && a.batch == nil && a.done == nil:
		if j.failed.Load() {
			if a.c.version < packet.V5 {
				a.c.unacknowledged(a.t, a.id)
				return
			}
			a.code = packet.UnspecifiedError
		}
		a.c.enqueueAck(a.t, a.id, a.code)
	default:
		a.send(nil)
	}
}

// setRoute asks the cluster to record this node's route for filter, within
// a bounded time.
func (s *Server) setRoute(filter string, members int) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ClusterTimeout)
	defer cancel()
	return s.cluster.SetRoute(ctx, filter, members)
}

// retainInCluster records a retained change through the cluster before the
// message is routed. It returns the reason code the publisher's 5.0
// acknowledgement carries when that failed (no quorum).
func (s *Server) retainInCluster(m *Message) packet.ReasonCode {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ClusterTimeout)
	defer cancel()
	if err := s.cluster.Retain(ctx, m); err != nil {
		s.stats.RetainFailures.Add(1)
		s.log.Warn("retained message not recorded in the cluster", "topic", m.Topic, "err", err)
		return packet.ImplementationSpecificError
	}
	return packet.Success
}

// retainedMatching returns the live retained messages matching filter.
func (s *Server) retainedMatching(filter string) []*Message {
	if s.cluster != nil {
		return s.cluster.Retained(filter)
	}
	return s.retained.match(filter)
}

// RoutedFilters returns the filters this broker has local non-shared
// subscribers for: the routes the cluster should hold for this node. With
// keep, only the subscriptions of the sessions (by client id) it keeps
// count: a copy of a session that lives on another node now must not draw
// that session's messages here.
func (s *Server) RoutedFilters(keep func(clientID string) bool) []string {
	var out []string
	s.subs.Walk(func(e topic.Entry[subValue]) bool {
		if e.Group == "" && (len(out) == 0 || out[len(out)-1] != e.Filter) && (keep == nil || keep(e.Subscriber)) {
			out = append(out, e.Filter)
		}
		return true
	})
	return out
}
