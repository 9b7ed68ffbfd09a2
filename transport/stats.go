package transport

import (
	"slices"
	"strings"
	"time"
)

// Stats is a snapshot of the transport's counters.
type Stats struct {
	Peers []PeerStats // sorted by node id

	// Receiving side, over all senders.
	Received      uint64 // messages handed to the Deliverer
	Duplicates    uint64 // resent messages not handed again
	DeliverErrors uint64 // batches the Deliverer refused (resent later)

	// Sends to a node that is not a peer (ErrUnknownPeer, or after Close).
	DroppedUnknownPeer uint64

	// Calls refused with ErrPermissionDenied (no or a wrong node id, not a
	// member).
	Refused uint64
}

// PeerStats are the forwarding counters of one peer. Dropped counts every
// message whose done got an error: DroppedFull (ErrOutboxFull),
// DroppedUnacked (ErrUnacknowledged), and those refused as too large or
// pending when the peer was removed or the transport closed.
type PeerStats struct {
	NodeID    string
	Addr      string
	Connected bool          // the forwarding stream is open
	Silence   time.Duration // since the peer was last heard on the stream

	AppliedIndex uint64 // as the peer last reported it

	Enqueued       uint64 // accepted by Send
	Sent           uint64 // sent, resends included
	Acked          uint64
	Retried        uint64 // resends after a reconnect (Sent = first sends + Retried)
	Dropped        uint64
	DroppedFull    uint64
	DroppedUnacked uint64
	Reconnects     uint64 // streams opened after the first

	OutboxDepth int // messages waiting or unacknowledged
	OutboxBytes int

	Latency    time.Duration // Send to acknowledgement, moving average (1/8)
	LatencyMax time.Duration
}

// Stats returns the counters now.
func (t *Transport) Stats() Stats {
	st := Stats{
		Received:           t.received.Load(),
		Duplicates:         t.duplicates.Load(),
		DeliverErrors:      t.deliverErrors.Load(),
		DroppedUnknownPeer: t.droppedUnknown.Load(),
		Refused:            t.refused.Load(),
	}
	now := t.now()
	for id, s := range *t.peers.Load() {
		s.mu.Lock()
		addr, depth, bytes := s.addr, len(s.q)-s.head, s.bytes
		s.mu.Unlock()
		ps := PeerStats{
			NodeID:         id,
			Addr:           addr,
			Connected:      s.stats.connected.Load(),
			AppliedIndex:   t.applied.get(id),
			Enqueued:       s.stats.enqueued.Load(),
			Sent:           s.stats.sent.Load(),
			Acked:          s.stats.acked.Load(),
			Retried:        s.stats.retried.Load(),
			Dropped:        s.stats.dropped.Load(),
			DroppedFull:    s.stats.droppedFull.Load(),
			DroppedUnacked: s.stats.droppedUnacked.Load(),
			Reconnects:     max(s.stats.opens.Load(), 1) - 1,
			OutboxDepth:    depth,
			OutboxBytes:    bytes,
			Latency:        time.Duration(s.stats.latency.Load()),
			LatencyMax:     time.Duration(s.stats.latencyMax.Load()),
		}
		if h := s.stats.lastHeard.Load(); h != 0 {
			ps.Silence = now - time.Duration(h)
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStats) int { return strings.Compare(a.NodeID, b.NodeID) })
	return st
}

// PeerConnected reports whether the forwarding stream to peer is open and
// the peer was heard within Config.PeerTimeout: whether it counts as
// reachable (for example when waiting for the peers' applied indexes).
func (t *Transport) PeerConnected(peer string) bool {
	s := (*t.peers.Load())[peer]
	return s != nil && s.connected(t.now())
}

// connected is PeerConnected at Transport.now() now.
func (s *peerSender) connected(now time.Duration) bool {
	return s.stats.connected.Load() && now-time.Duration(s.stats.lastHeard.Load()) <= s.t.cfg.PeerTimeout
}
