package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// freeAddr reserves a loopback port for a node that must keep its Raft
// address across a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// After losing a majority for good, a survivor restarted with
// data-dir/raft/peers.json naming only itself leads a cluster of one, with
// the state it had; the file is used once.
func TestRecoverQuorumFromPeersJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	raftAddr := freeAddr(t)
	c := &testCluster{t: t, cfgs: make([]Config, 3), nodes: make([]*Node, 3)}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	for i := range 3 {
		cfg := DefaultConfig()
		cfg.NodeID = fmt.Sprintf("node-%d", i)
		cfg.DataDir = t.TempDir()
		cfg.BootstrapExpect = 3
		cfg.FastGossip = true
		cfg.ReconcileInterval = 100 * time.Millisecond
		if i == 2 {
			cfg.RaftAddr = raftAddr
		}
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		c.cfgs[i] = cfg
		c.start(i)
	}
	ld := c.leader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ld.Propose(ctx, routeCmd(t, "node-2", "survives/#", 1)); err != nil {
		t.Fatal(err)
	}
	c.everyNodeHasRoute("survives/#", 5*time.Second)
	c.kill(0)
	c.kill(1)
	c.kill(2)

	peers := filepath.Join(c.cfgs[2].DataDir, "raft", "peers.json")
	body := fmt.Sprintf(`[{"id": "node-2", "address": %q, "non_voter": false}]`, raftAddr)
	if err := os.WriteFile(peers, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c.restart(2)
	nd := c.nodes[2]
	if _, err := nd.WaitLeader(ctx); err != nil {
		t.Fatalf("no leader after recovery: %v", err)
	}
	if _, ok := nd.FSM().Route("survives/#", ""); !ok {
		t.Fatal("the recovered node lost its state")
	}
	eventually(t, 10*time.Second, func() error {
		_, err := nd.Propose(ctx, routeCmd(t, "node-2", "after/#", 1))
		return err
	})
	if _, err := os.Stat(peers); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("peers.json still there after use: %v", err)
	}
	if _, err := os.Stat(peers + ".applied"); err != nil {
		t.Errorf("peers.json.applied: %v", err)
	}
}
