package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
	"github.com/mqcluster/mqcluster/transport"
)

// RaftStatus is this node's view of Raft.
type RaftStatus struct {
	State      string // leader, follower, candidate or shutdown
	Term       uint64
	LeaderID   string // "" when no leader is known
	LeaderAddr string
	// LastContact is when a leader was last heard (zero: never; on the
	// leader itself, zero).
	LastContact  time.Time
	CommitIndex  uint64
	AppliedIndex uint64 // applied by Raft (no-op and configuration entries included)
	LastLogIndex uint64
	// FSMAppliedIndex is the last command entry the state machine applied.
	FSMAppliedIndex uint64
	// Servers is the Raft configuration, sorted by id; empty until this
	// node bootstrapped or was added.
	Servers []RaftServer
}

// RaftServer is one member of the Raft configuration.
type RaftServer struct {
	ID      string
	Address string
	Voter   bool
}

// RaftStatus reads Raft's state now.
func (n *Node) RaftStatus() RaftStatus {
	addr, id := n.raft.LeaderWithID()
	st := RaftStatus{
		State:           strings.ToLower(n.raft.State().String()),
		Term:            n.raft.CurrentTerm(),
		LeaderID:        string(id),
		LeaderAddr:      string(addr),
		CommitIndex:     n.raft.CommitIndex(),
		AppliedIndex:    n.raft.AppliedIndex(),
		LastLogIndex:    n.raft.LastIndex(),
		FSMAppliedIndex: n.fsm.AppliedIndex(),
	}
	if n.raft.State() != raft.Leader {
		st.LastContact = n.raft.LastContact()
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, RaftServer{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	slices.SortFunc(st.Servers, func(a, b RaftServer) int { return strings.Compare(a.ID, b.ID) })
	return st
}

// InContact reports whether this node leads, or heard from a leader within
// the last two seconds.
func (n *Node) InContact() bool { return n.inContact() }

// MemberStatus is one node as gossip and Raft know it.
type MemberStatus struct {
	ID string
	// Gossip is memberlist's view: alive, suspect, dead or left; "unknown"
	// for a Raft server that gossip does not list.
	Gossip     string
	GossipAddr string
	RaftAddr   string
	GRPCAddr   string
	// Raft is the node's part in the Raft configuration: voter, nonvoter
	// or "" (not in it).
	Raft   string
	Leader bool
}

// Members lists the nodes gossip knows and the servers of the Raft
// configuration, sorted by id.
func (n *Node) Members() []MemberStatus {
	byID := map[string]*MemberStatus{}
	for id, e := range n.roster.entries() {
		ms := &MemberStatus{ID: id, Gossip: "dead", GossipAddr: e.gossip, RaftAddr: e.meta.Raft, GRPCAddr: e.meta.GRPC}
		if e.alive {
			ms.Gossip = "alive"
		}
		byID[id] = ms
	}
	st := n.RaftStatus()
	for _, s := range st.Servers {
		ms := byID[s.ID]
		if ms == nil {
			ms = &MemberStatus{ID: s.ID, Gossip: "unknown"}
			byID[s.ID] = ms
		}
		ms.RaftAddr = cmp.Or(ms.RaftAddr, s.Address)
		ms.Raft = "nonvoter"
		if s.Voter {
			ms.Raft = "voter"
		}
	}
	if l := byID[st.LeaderID]; l != nil {
		l.Leader = true
	}
	out := make([]MemberStatus, 0, len(byID))
	for _, ms := range byID {
		out = append(out, *ms)
	}
	slices.SortFunc(out, func(a, b MemberStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// HealthScore is memberlist's awareness score: 0 is healthy; it grows when
// this node fails to answer probes in time (it is slow or its network is).
func (n *Node) HealthScore() int { return n.ml.GetHealthScore() }

// TransportStats are the forwarding counters, per peer.
func (n *Node) TransportStats() transport.Stats { return n.tr.Stats() }

// LaggingRoutes counts routes answered before a reachable peer reported
// applying them (the peer was slower than the wait).
func (n *Node) LaggingRoutes() int64 { return n.lagging.Load() }

// RemoveMember takes node id out of the cluster (an operator's command):
// the leader does it itself; a follower asks the leader through the
// transport. The error wraps ErrNoLeader when no leader is known.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if n.IsLeader() {
		return n.removeMember(ctx, id)
	}
	leader, _ := n.Leader()
	addr := n.peerAddr(leader)
	if leader == "" || addr == "" {
		return ErrNoLeader
	}
	if err := n.tr.Leave(ctx, addr, &pb.LeaveRequest{NodeId: id}); err != nil {
		if errors.Is(err, transport.ErrNotLeader) {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return err
	}
	return nil
}

// Settle waits until the commands the broker handed to the node without
// waiting (session releases and ends, recorded subscriptions, wills) have
// been committed or given up, or until ctx ends. A node that is shutting
// down calls it before Close, so that its clients' last changes are not
// lost with it.
func (n *Node) Settle(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.ops.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		case <-t.C:
		}
	}
	return nil
}
