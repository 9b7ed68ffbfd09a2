package node

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// waitCommitted waits until this node's state machine has applied every
// command the Raft log had committed when it was called. The commit index
// itself may name an entry the state machine never sees (a new leader's
// no-op, a configuration change), so the wait is for the last command at
// or below it; and a follower that just came back knows only the commit
// index of its own log until the leader's entries arrive, so the wait is
// also for the applied index the leader reports on its forwarding stream.
func (n *Node) waitCommitted(ctx context.Context) error {
	if _, id := n.raft.LeaderWithID(); id != "" && string(id) != n.cfg.NodeID {
		// The leader's stream reports its index with every frame; one that
		// stays at 0 on a connected stream is a leader that has applied no
		// command yet (a new cluster).
		leader := string(id)
		var connectedAt time.Time
		for n.tr.PeerApplied(leader) == 0 {
			if !n.tr.PeerConnected(leader) {
				connectedAt = time.Time{}
			} else if connectedAt.IsZero() {
				connectedAt = time.Now()
			} else if time.Since(connectedAt) > 500*time.Millisecond {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-n.stop:
				return ErrClosed
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err := n.fsm.WaitApplied(ctx, n.tr.PeerApplied(leader)); err != nil {
			return err
		}
	}
	commit := n.raft.CommitIndex()
	if n.fsm.AppliedIndex() >= commit {
		return nil // the usual case: no log entry to read
	}
	target := uint64(0)
	var entry raft.Log
	for i := commit; i > 0; i-- {
		if err := n.store.GetLog(i, &entry); err != nil {
			// Compacted into a snapshot, which the state machine was
			// restored from: nothing older to wait for.
			break
		}
		if entry.Type == raft.LogCommand {
			target = i
			break
		}
	}
	return n.fsm.WaitApplied(ctx, target)
}

// caughtUpSlack is how many entries behind the leader's last report a
// node still counts as caught up: under a steady stream of proposals a
// follower is always a few behind.
const caughtUpSlack = 32

// caughtUp reports whether this node's state machine has applied about
// what the leader last reported applying (true on the leader).
func (n *Node) caughtUp() bool {
	_, id := n.raft.LeaderWithID()
	if id == "" || string(id) == n.cfg.NodeID {
		return id != ""
	}
	return n.fsm.AppliedIndex()+caughtUpSlack >= n.tr.PeerApplied(string(id))
}

// barrier returns once this replica has applied an entry it proposed, and
// so every entry committed before it: what it reads then is at least as
// new as anything the cluster had decided when barrier was called.
func (n *Node) barrier(ctx context.Context) error {
	_, err := n.proposeApplied(ctx, &pb.Command{Ignorable: true})
	return err
}

// proposeApplied proposes cmd and returns its log index once this replica
// has applied it.
func (n *Node) proposeApplied(ctx context.Context, cmd *pb.Command) (uint64, error) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return 0, err
	}
	idx, err := n.Propose(ctx, b)
	if err != nil {
		return 0, err
	}
	return idx, n.fsm.WaitApplied(ctx, idx)
}
