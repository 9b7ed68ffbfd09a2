package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
	"github.com/mqcluster/mqcluster/transport"
)

// membership serves Join and Leave from other nodes; only the leader
// changes the Raft configuration.
type membership struct{ n *Node }

func (m membership) Join(ctx context.Context, req *pb.JoinRequest) error {
	if !m.n.IsLeader() {
		return fmt.Errorf("%w: %s", transport.ErrNotLeader, m.n.cfg.NodeID)
	}
	m.n.addServer(member{id: req.GetNodeId(), raft: req.GetRaftAddr(), grpc: req.GetGrpcAddr()}, req.GetVoter())
	return nil
}

func (m membership) Leave(ctx context.Context, req *pb.LeaveRequest) error {
	if !m.n.IsLeader() {
		return fmt.Errorf("%w: %s", transport.ErrNotLeader, m.n.cfg.NodeID)
	}
	return m.n.removeMember(ctx, req.GetNodeId())
}

// removeMember takes a node out of the cluster for good (scale-down): its
// routes and wills go, its sessions are released for adoption (NodeRemove),
// and it leaves the Raft configuration. This node must lead.
func (n *Node) removeMember(ctx context.Context, id string) error {
	run := ""
	if v, ok := n.gossipView()[id]; ok {
		run = v
	}
	cmd, err := fsm.Encode(&pb.Command{Op: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{NodeId: id, AtUnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		return err
	}
	if _, err := n.proposeLocal(ctx, cmd); err != nil {
		return err
	}
	n.removedMu.Lock()
	n.removedRun[id] = run
	n.removedMu.Unlock()
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return err
	}
	n.log.Info("member removed from the cluster", "peer", id)
	return nil
}

// wasRemoved reports whether gossip's member id is the run of that node
// this leader removed: it is not added back (a new run of it is).
func (n *Node) wasRemoved(id, run string) bool {
	n.removedMu.Lock()
	defer n.removedMu.Unlock()
	r, ok := n.removedRun[id]
	return ok && r == run
}

// leaveThroughLeader asks the leader to remove this node.
func (n *Node) leaveThroughLeader() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	for {
		leader, _ := n.Leader()
		addr := n.peerAddr(leader)
		var err error
		if leader == "" || addr == "" {
			err = ErrNoLeader
		} else if err = n.tr.Leave(ctx, addr, &pb.LeaveRequest{NodeId: n.cfg.NodeID}); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
