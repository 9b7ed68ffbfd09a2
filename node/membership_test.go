package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/fsm"
)

// suffrage returns the voters and non-voters in n's Raft configuration.
func suffrage(n *Node) (voters, nonvoters []string) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, nil
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		} else {
			nonvoters = append(nonvoters, string(s.ID))
		}
	}
	return voters, nonvoters
}

// Members beyond the voter cap join as non-voters: they replicate and
// apply everything but do not slow commits.
func TestVoterCapAddsNonVoters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 4-node cluster")
	}
	c := &testCluster{t: t, cfgs: make([]Config, 4), nodes: make([]*Node, 4)}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	for i := range 4 {
		cfg := DefaultConfig()
		cfg.NodeID = fmt.Sprintf("node-%d", i)
		cfg.DataDir = t.TempDir()
		cfg.BootstrapExpect = 3
		cfg.MaxVoters = 3
		cfg.FastGossip = true
		cfg.ReconcileInterval = 100 * time.Millisecond
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		c.cfgs[i] = cfg
		c.start(i)
	}
	l := c.leader(10 * time.Second)
	eventually(t, 15*time.Second, func() error {
		v, nv := suffrage(l)
		if len(v) != 3 || len(nv) != 1 {
			return fmt.Errorf("voters %v, non-voters %v", v, nv)
		}
		return nil
	})
	// The non-voter applies what the voters commit.
	_, nv := suffrage(l)
	var follower *Node
	for _, nd := range c.nodes {
		if nd.ID() == nv[0] {
			follower = nd
		}
	}
	if _, err := l.Propose(t.Context(), routeCmd(t, l.ID(), "to/nonvoter", 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if _, ok := follower.FSM().Route("to/nonvoter", ""); !ok {
			return fmt.Errorf("non-voter %s has not applied the route", follower.ID())
		}
		return nil
	})
}

// Gossip is encrypted with the cluster key: a node with another key cannot
// join (BAD-INPUT row 27, "wrong memberlist key"), one with the key can.
func TestGossipKeyKeepsStrangersOut(t *testing.T) {
	key := []byte("0123456789abcdef")
	start := func(id string, k []byte, join []string, expect int) *Node {
		cfg := DefaultConfig()
		cfg.NodeID = id
		cfg.DataDir = t.TempDir()
		cfg.FastGossip = true
		cfg.GossipKey = k
		cfg.Join = join
		cfg.BootstrapExpect = expect
		n, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a := start("a", key, nil, 1)
	stranger := start("stranger", []byte("fedcba9876543210"), []string{a.GossipAddr()}, 0)
	friend := start("friend", key, []string{a.GossipAddr()}, 0)
	eventually(t, 10*time.Second, func() error {
		if !a.isMember("friend") {
			return fmt.Errorf("the node with the key has not joined")
		}
		return nil
	})
	// The stranger keeps trying its seed every few hundred milliseconds;
	// over a second of that it must never get in.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if a.isMember("stranger") || stranger.isMember("a") || friend.isMember("stranger") {
			t.Fatal("a node with another gossip key joined")
		}
	}
}

// A follower that leaves on purpose (scale-down) goes through the leader:
// it is out of the Raft configuration, recorded as removed, and not added
// back while that run of it is still in gossip; the rest keeps a quorum.
// Its persistent session is adopted by a node that remains.
func TestFollowerLeaveThroughLeader(t *testing.T) {
	c, addrs := brokerCluster(t)
	ld := c.leader(5 * time.Second)
	leaving := 0
	if ld == c.nodes[0] {
		leaving = 1
	}
	dev := newDeviceState()
	a, _ := rawConnect(t, addrs[leaving], "leaver-session", dev, true, 600)
	a.subscribe("leave/#", 1)
	a.disconnect()
	id := c.nodes[leaving].ID()
	if err := c.nodes[leaving].Leave(); err != nil {
		t.Fatalf("leave: %v", err)
	}
	eventually(t, 10*time.Second, func() error {
		voters, nonvoters := suffrage(ld)
		if len(voters)+len(nonvoters) != 2 {
			return fmt.Errorf("raft configuration %v %v, want 2 servers", voters, nonvoters)
		}
		if nd, ok := ld.FSM().Node(id); !ok || nd.State != fsm.NodeRemoved {
			return fmt.Errorf("node record %+v, want removed", nd)
		}
		return nil
	})
	// Two reconcile rounds later it is still out.
	time.Sleep(3 * c.cfgs[0].ReconcileInterval)
	if v, nv := suffrage(ld); len(v)+len(nv) != 2 {
		t.Fatalf("the node that left was added back: %v %v", v, nv)
	}
	eventually(t, 10*time.Second, func() error {
		s, _ := ld.FSM().Session("leaver-session")
		if s.Owner == "" || s.Owner == id {
			return fmt.Errorf("session owner %q", s.Owner)
		}
		return nil
	})
}
