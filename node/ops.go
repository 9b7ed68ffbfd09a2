package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// opRetryFor bounds how long a queued op is retried while there is no
// leader; past it the op is dropped with a warning.
const opRetryFor = 30 * time.Second

// opParallel bounds the proposals one batch has in flight.
const opParallel = 256

// opQueue proposes the commands the broker hands over without waiting for
// them (session releases and ends, recorded subscriptions, wills). Ops with
// the same key are proposed in the order they were added: a batch keeps the
// last op of each key, and the next batch starts when the previous one is
// committed. A will registered and cleared within one batch never reaches
// Raft.
type opQueue struct {
	n    *Node
	mu   sync.Mutex
	q    []queuedOp
	wake chan struct{}
	// pending counts ops added and not yet proposed or given up (Settle).
	pending atomic.Int64
}

type queuedOp struct {
	key string
	cmd *pb.Command
}

func newOpQueue(n *Node) *opQueue { return &opQueue{n: n, wake: make(chan struct{}, 1)} }

func (q *opQueue) add(key string, cmd *pb.Command) {
	q.pending.Add(1)
	q.mu.Lock()
	q.q = append(q.q, queuedOp{key, cmd})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run proposes queued ops until stop closes.
func (q *opQueue) run(stop <-chan struct{}) {
	sem := make(chan struct{}, opParallel)
	for {
		select {
		case <-stop:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			batch := q.q
			q.q = nil
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			var wg sync.WaitGroup
			for _, op := range coalesce(batch) {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					q.propose(op, stop)
				}()
			}
			wg.Wait()
			q.pending.Add(-int64(len(batch)))
		}
	}
}

// coalesce keeps the last op of each key, in the order of those last ops,
// and drops a will whose registration and clearing are both in the batch.
func coalesce(batch []queuedOp) []queuedOp {
	last := make(map[string]int, len(batch))
	set := make(map[string]bool)
	for i, op := range batch {
		last[op.key] = i
		if op.cmd.GetWillSet() != nil {
			set[op.key] = true
		}
	}
	out := batch[:0:0]
	for i, op := range batch {
		if last[op.key] != i || op.cmd.GetWillClear() != nil && set[op.key] {
			continue
		}
		out = append(out, op)
	}
	return out
}

func (q *opQueue) propose(op queuedOp, stop <-chan struct{}) {
	cmd, err := fsm.Encode(op.cmd)
	if err != nil {
		q.n.log.Warn("cluster op not encoded", "key", op.key, "err", err)
		return
	}
	deadline := time.Now().Add(opRetryFor)
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := q.n.Propose(ctx, cmd)
		cancel()
		switch {
		case err == nil:
			if ws := op.cmd.GetWillSet(); ws != nil {
				q.n.willCommitted(ws.GetWillId())
			}
			return
		case errors.Is(err, ErrRejected) || isRejection(err):
			// Superseded: a newer claim of the session, or it is gone.
			q.n.log.Debug("cluster op rejected", "key", op.key, "err", err)
			return
		case time.Now().After(deadline):
			q.n.log.Warn("cluster op dropped: no leader to commit it", "key", op.key, "err", err)
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
