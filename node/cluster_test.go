package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// testLogger is where a test's nodes and brokers log: stderr with -v,
// otherwise a buffer shown only when the test fails.
func testLogger(t *testing.T) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	testLogsMu.Lock()
	defer testLogsMu.Unlock()
	if l, ok := testLogs[t]; ok {
		return l.log
	}
	l := &testLog{}
	l.log = slog.New(slog.NewTextHandler(l, opts))
	testLogs[t] = l
	t.Cleanup(func() {
		testLogsMu.Lock()
		delete(testLogs, t)
		testLogsMu.Unlock()
		if t.Failed() {
			l.mu.Lock()
			t.Logf("logs of the nodes and brokers:\n%s", l.buf.String())
			l.mu.Unlock()
		}
	})
	return l.log
}

var (
	testLogsMu sync.Mutex
	testLogs   = map[*testing.T]*testLog{}
)

type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	log *slog.Logger
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// testCluster runs n nodes in this process on loopback ports with real
// Raft storage in temporary directories.
type testCluster struct {
	t     *testing.T
	cfgs  []Config
	nodes []*Node
}

func newCluster(t *testing.T, n int, opts ...func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, cfgs: make([]Config, n), nodes: make([]*Node, n)}
	for i := range n {
		cfg := DefaultConfig()
		cfg.NodeID = fmt.Sprintf("node-%d", i)
		cfg.DataDir = t.TempDir()
		cfg.BootstrapExpect = n
		cfg.FastGossip = true
		cfg.ReconcileInterval = 100 * time.Millisecond
		cfg.Logger = testLogger(t).With("node", cfg.NodeID)
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		for _, o := range opts {
			o(&cfg)
		}
		c.cfgs[i] = cfg
		c.start(i)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	return c
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	nd, err := Start(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("start %s: %v", c.cfgs[i].NodeID, err)
	}
	c.nodes[i] = nd
}

// kill stops node i without leaving the cluster, as a crash would.
func (c *testCluster) kill(i int) {
	c.nodes[i].Close()
	c.nodes[i] = nil
}

// killWithBroker is kill, then closes the broker node i ran (a crash takes
// both).
func (c *testCluster) killWithBroker(i int) {
	srv := c.nodes[i].brk.Load()
	c.kill(i)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Close(ctx)
}

// restart starts node i again on its data directory, joining through the
// live nodes.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	c.cfgs[i].Join = nil
	for j, nd := range c.nodes {
		if nd != nil && j != i {
			c.cfgs[i].Join = append(c.cfgs[i].Join, nd.GossipAddr())
		}
	}
	c.cfgs[i].BootstrapExpect = 0
	c.start(i)
}

// leader waits for exactly one live node to lead and returns it.
func (c *testCluster) leader(timeout time.Duration) *Node {
	c.t.Helper()
	var l *Node
	eventually(c.t, timeout, func() error {
		l = nil
		for _, nd := range c.nodes {
			if nd == nil || !nd.IsLeader() {
				continue
			}
			if l != nil {
				return fmt.Errorf("two leaders: %s and %s", l.ID(), nd.ID())
			}
			l = nd
		}
		if l == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return l
}

func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func routeCmd(t *testing.T, node, filter string, members uint32) []byte {
	t.Helper()
	b, err := fsm.Encode(&pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{NodeId: node, Filter: filter, Members: members}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// everyNodeHasRoute waits until every live node's state machine holds the
// route.
func (c *testCluster) everyNodeHasRoute(filter string, timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		for _, nd := range c.nodes {
			if nd == nil {
				continue
			}
			if _, ok := nd.FSM().Route(filter, ""); !ok {
				return fmt.Errorf("%s lacks route %q", nd.ID(), filter)
			}
		}
		return nil
	})
}

func (c *testCluster) voters(n *Node) int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	k := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			k++
		}
	}
	return k
}

// Three nodes find each other through one seed, bootstrap once, elect a
// leader and replicate, also what a follower proposes; after kill -9 of the
// leader a new one takes over and accepts proposals within seconds; the
// killed node comes back on its data directory and catches up.
func TestClusterFormsReplicatesAndSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node raft cluster")
	}
	c := newCluster(t, 3)
	l := c.leader(10 * time.Second)
	eventually(t, 10*time.Second, func() error {
		if v := c.voters(l); v != 3 {
			return fmt.Errorf("%d voters", v)
		}
		return nil
	})
	ctx := context.Background()
	if _, err := l.Propose(ctx, routeCmd(t, l.ID(), "a/+", 1)); err != nil {
		t.Fatal(err)
	}
	c.everyNodeHasRoute("a/+", 5*time.Second)
	// A follower's proposal goes to the leader through the transport.
	for _, nd := range c.nodes {
		if nd != l {
			eventually(t, 10*time.Second, func() error {
				_, err := nd.Propose(ctx, routeCmd(t, nd.ID(), "from/follower", 1))
				return err
			})
			break
		}
	}
	c.everyNodeHasRoute("from/follower", 5*time.Second)
	// A command the state machine refuses comes back as a rejection.
	for _, nd := range c.nodes {
		if nd != l {
			bad, _ := fsm.Encode(&pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{NodeId: "", Filter: "x"}}})
			if _, err := nd.Propose(ctx, bad); !errors.Is(err, ErrRejected) {
				t.Fatalf("invalid command through a follower: %v, want ErrRejected", err)
			}
			break
		}
	}

	old := -1
	for i, nd := range c.nodes {
		if nd == l {
			old = i
		}
	}
	killed := time.Now()
	c.kill(old)
	nl := c.leader(10 * time.Second)
	took := time.Since(killed)
	eventually(t, 10*time.Second, func() error {
		_, err := nl.Propose(ctx, routeCmd(t, nl.ID(), "after/failover", 1))
		return err
	})
	t.Logf("new leader %s and an accepted proposal %v after kill", nl.ID(), time.Since(killed))
	if took > 5*time.Second {
		t.Errorf("new leader after %v", took)
	}

	c.restart(old)
	c.everyNodeHasRoute("after/failover", 20*time.Second)
	if got := c.nodes[old].FSM().AppliedIndex(); got == 0 {
		t.Fatal("restarted node applied nothing")
	}
}

// The embedded default: a cluster of one bootstraps itself, and its state
// survives a restart on the same data directory.
func TestSingleNodeRestart(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID = "solo"
	cfg.DataDir = t.TempDir()
	cfg.FastGossip = true
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		_, err := n.Propose(ctx, routeCmd(t, "solo", "kept", 1))
		return err
	})
	n.Close()
	n2, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	eventually(t, 10*time.Second, func() error {
		if _, ok := n2.FSM().Route("kept", ""); !ok {
			return errors.New("route not restored")
		}
		return nil
	})
}
