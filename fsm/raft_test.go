package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// raftCluster is N in-process hashicorp/raft nodes over raft's in-memory
// transport, log store and snapshot store, each with its own FSM.
type raftCluster struct {
	t     *testing.T
	nodes []*raftNode
}

type raftNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	trans *raft.InmemTransport
	store *raft.InmemStore // log and stable store, kept across restarts
	snaps *raft.InmemSnapshotStore
	fsm   *FSM
	raft  *raft.Raft
}

func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotInterval = time.Hour // snapshots only when the test asks
	c.SnapshotThreshold = 1 << 30
	c.TrailingLogs = 10 // a snapshot compacts the log: a lagging node gets InstallSnapshot
	c.LogOutput = io.Discard
	c.LogLevel = "error"
	return c
}

func newRaftCluster(t *testing.T, n int) *raftCluster {
	c := &raftCluster{t: t}
	var servers []raft.Server
	for i := range n {
		id := raft.ServerID(fmt.Sprintf("node-%d", i))
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		c.nodes = append(c.nodes, &raftNode{id: id, addr: addr, trans: trans,
			store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()})
		servers = append(servers, raft.Server{ID: id, Address: addr, Suffrage: raft.Voter})
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
	for i, nd := range c.nodes {
		if i == 0 {
			if err := raft.BootstrapCluster(raftConfig(nd.id), nd.store, nd.store, nd.snaps, nd.trans,
				raft.Configuration{Servers: servers}); err != nil {
				t.Fatal(err)
			}
		}
		c.start(nd)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd.raft != nil {
				_ = nd.raft.Shutdown().Error()
			}
		}
	})
	return c
}

// start runs raft for nd with a fresh FSM over its stores: on a restart
// raft restores the FSM from the latest snapshot, then replays the log.
func (c *raftCluster) start(nd *raftNode) {
	nd.fsm = newFSM(c.t)
	r, err := raft.NewRaft(raftConfig(nd.id), nd.fsm, nd.store, nd.store, nd.snaps, nd.trans)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.raft = r
}

func (c *raftCluster) leader() *raftNode {
	var l *raftNode
	eventually(c.t, 10*time.Second, func() error {
		for _, nd := range c.nodes {
			if nd.raft != nil && nd.raft.State() == raft.Leader {
				l = nd
				return nil
			}
		}
		return errors.New("no leader")
	})
	return l
}

// apply proposes commands on the leader (following it if it changes) and
// returns the index of the last one.
func (c *raftCluster) apply(cmds []*pb.Command) uint64 {
	var last uint64
	for _, cmd := range cmds {
		data, err := Encode(cmd)
		if err != nil {
			c.t.Fatal(err)
		}
		eventually(c.t, 10*time.Second, func() error {
			f := c.leader().raft.Apply(data, time.Second)
			if err := f.Error(); err != nil {
				return err // not leader any more: the ops are idempotent, propose again
			}
			if fe, ok := f.Response().(*FatalError); ok {
				c.t.Fatalf("fatal response: %v", fe)
			}
			last = f.Index()
			return nil
		})
	}
	return last
}

// converged waits until every running node applied index and checks that
// they all write the same snapshot.
func (c *raftCluster) converged(index uint64) {
	c.t.Helper()
	var first []byte
	for _, nd := range c.nodes {
		if err := waitApplied(nd.fsm, index); err != nil {
			c.t.Fatalf("%s: %v (applied %d)", nd.id, err, nd.fsm.AppliedIndex())
		}
		data := snapshotBytes(c.t, nd.fsm)
		if first == nil {
			first = data
			continue
		}
		if !bytes.Equal(data, first) {
			c.t.Fatalf("%s diverged:\n%s\n---\n%s", nd.id, dump(c.t, nd.fsm), dump(c.t, c.nodes[0].fsm))
		}
	}
}

func (c *raftCluster) isolate(nd *raftNode) {
	nd.trans.DisconnectAll()
	for _, o := range c.nodes {
		if o != nd {
			o.trans.Disconnect(nd.addr)
		}
	}
}

func (c *raftCluster) heal(nd *raftNode) {
	for _, o := range c.nodes {
		if o != nd {
			o.trans.Connect(nd.addr, nd.trans)
			nd.trans.Connect(o.addr, o.trans)
		}
	}
}

// TestRaftCluster runs the FSM under a real hashicorp/raft cluster of three
// and checks that every replica converges to byte-identical snapshots: after
// plain replication, after a follower that fell behind a compacted log was
// brought up to date by InstallSnapshot (Restore), and after a follower
// restarted from its own forced snapshot plus the log.
func TestRaftCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a raft cluster")
	}
	c := newRaftCluster(t, 3)
	log := randomCommands(11, 600)

	c.converged(c.apply(log[:200]))

	// A follower falls behind; the leader compacts its log past it.
	leader := c.leader()
	var follower *raftNode
	for _, nd := range c.nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	c.isolate(follower)
	last := c.apply(log[200:400])
	if leader != c.leader() {
		t.Log("leadership moved while a follower was isolated")
	}
	if err := c.leader().raft.Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	c.heal(follower)
	c.converged(last)
	if follower.fsm.Stats().Restores == 0 {
		t.Error("the lagging follower caught up without restoring a snapshot: the test did not exercise Restore")
	}

	// A follower snapshots, restarts with a fresh FSM: raft restores the
	// snapshot and replays the rest of the log.
	leader = c.leader()
	for _, nd := range c.nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	last = c.apply(log[400:500])
	if err := waitApplied(follower.fsm, last); err != nil {
		t.Fatal(err)
	}
	if err := follower.raft.Snapshot().Error(); err != nil {
		t.Fatalf("follower snapshot: %v", err)
	}
	if err := follower.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	follower.raft = nil
	_, follower.trans = raft.NewInmemTransport(follower.addr)
	c.heal(follower)
	c.start(follower)
	if follower.fsm.Stats().Restores != 1 {
		t.Errorf("restarted follower restored %d snapshots, want 1", follower.fsm.Stats().Restores)
	}
	c.converged(c.apply(log[500:]))
}

func waitApplied(f *FSM, index uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.WaitApplied(ctx, index)
}
