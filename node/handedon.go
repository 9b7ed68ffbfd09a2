package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mqcluster/mqcluster/broker"
)

// handedOn is what one forwarded batch hands on to one session: its
// deliveries, the newest state index a sender chose this node by, and the
// most hops any of them took.
type handedOn struct {
	ds    []broker.SessionDelivery
	index uint64
	hops  uint32
}

// handOnHops bounds how often nodes that do not hold a session pass its
// handed-on messages on: each waits to be as new as its sender first, so
// more hops than this mean claims racing on; the messages are dropped.
const handOnHops = 3

// stateWait bounds how long a node that does not hold a session waits,
// with handed-on messages for it, for its state to become as new as the
// sender's (the forwarding stream from that sender waits as long).
const stateWait = 2 * time.Second

// takeHandedOn places messages handed on to the session of id: in the
// session here, or, when this node holds none, with the node the cluster
// records as its owner once this node's state is as new as the state that
// chose this node. The sender counts them as delivered once this returns
// nil: they are dropped only when the cluster records no owner to take
// them (the session ended) or this node is that owner and the session
// ended here.
func (n *Node) takeHandedOn(ctx context.Context, b *broker.Server, from, id string, h *handedOn) error {
	placed := func() (bool, error) {
		n.ownSession(b, id)
		err := b.DeliverToSession(ctx, id, h.ds)
		return !errors.Is(err, broker.ErrNoSession), err
	}
	if done, err := placed(); done {
		return err
	}
	if n.fsm.AppliedIndex() < h.index {
		wctx, cancel := context.WithTimeout(ctx, stateWait)
		werr := n.fsm.WaitApplied(wctx, h.index)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err() // the stream ended: the sender sends them again
		}
		if werr == nil {
			if done, err := placed(); done {
				return err
			}
		}
	}
	s, ok := n.fsm.Session(id)
	ended, endedHere := n.ended.get(id)
	switch {
	case ok && endedHere && ended < s.Epoch:
		// The session they were meant for ended here (expired): the
		// one the cluster records now is a later one of the same client
		// id, which must not get them (a node that passed on messages to
		// the session here since it moved here; a new session got 1,277
		// messages published before it existed, in a jepsen-lite run).
	case ok && s.Owner == n.cfg.NodeID:
		// Claimed here since the last look; or ended here.
		if done, err := placed(); done {
			return err
		}
	case ok && s.Owner != "" && h.hops < handOnHops:
		if k := n.passedOn.add(id, len(h.ds)); k > 0 {
			n.log.Info("handed-on messages for a session this node does not hold passed on to its owner",
				"client_id", id, "from", from, "owner", s.Owner, "messages", k, "hops", h.hops+1)
		}
		n.sendOn(b, id, s.Owner, h.ds, h.hops+1, nil)
		return nil
	}
	b.Stats().PassOnFailures.Add(int64(len(h.ds)))
	n.log.Warn("handed-on messages for a session this node does not hold; dropped",
		"client_id", id, "from", from, "messages", len(h.ds), "recorded", ok, "owner", s.Owner, "hops", h.hops,
		"state_index", n.fsm.AppliedIndex(), "sender_state_index", h.index)
	return nil
}

// sparseLogEvery is how often a sparseLog lets a line through per key.
const sparseLogEvery = 5 * time.Second

// sparseLog counts events per key and lets one log line through per key
// every sparseLogEvery, with the count since the last: a hand-on of
// hundreds of messages arrives in as many batches.
type sparseLog struct {
	mu   sync.Mutex
	last map[string]sparseCount
}

type sparseCount struct {
	at time.Time
	n  int
}

// add counts k events of key and returns how many to log now (0: none).
func (l *sparseLog) add(key string, k int) int {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]sparseCount)
	}
	c := l.last[key]
	c.n += k
	if now.Sub(c.at) < sparseLogEvery {
		l.last[key] = c
		return 0
	}
	if len(l.last) > 1000 { // keys of the last few seconds only
		for key, old := range l.last {
			if now.Sub(old.at) >= sparseLogEvery {
				delete(l.last, key)
			}
		}
	}
	l.last[key] = sparseCount{at: now}
	return c.n
}

// willKey names a will forwarded to this node (Node.seenWills).
type willKey struct {
	node string
	id   uint64
}

// keepSeenWills outlasts the retries of a will (willRetryFor).
const keepSeenWills = 2*willRetryFor + time.Minute
