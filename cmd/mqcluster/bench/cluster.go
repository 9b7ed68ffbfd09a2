package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clusterReadyTimeout bounds how long a fresh cluster may take to elect a
// leader and grant a subscribe on every node.
const clusterReadyTimeout = 60 * time.Second

// cluster is n `mqcluster serve` processes forming one cluster on loopback,
// each with its MQTT, Raft, memberlist and gRPC listeners on free ports and
// its data in its own temporary directory.
type cluster struct {
	nodes  []*brokerProc
	ids    []string // --node-id of each node
	killed []bool   // nodes ended with SIGKILL on purpose (failover)
}

// startCluster starts n cluster nodes, node 0 first with its memberlist port
// known in advance so that the others --join it, and waits until every node
// grants a subscribe (which needs a Raft leader).
func startCluster(ctx context.Context, bins brokerBins, n int) (*cluster, error) {
	if !bins.mqclusterDataDir {
		return nil, errors.New("cluster: mqcluster serve has no --data-dir")
	}
	c := &cluster{killed: make([]bool, n)}
	// Each node gets its own admin port (spawnBroker).
	var seed string
	for i := range n {
		ports := make([]int, 3)
		for j := range ports {
			p, err := freePort()
			if err != nil {
				c.stop()
				return nil, err
			}
			ports[j] = p
		}
		gossip := "127.0.0.1:" + strconv.Itoa(ports[0])
		id := fmt.Sprintf("n%d", i)
		args := []string{"--node-id", id, "--bootstrap-expect", strconv.Itoa(n),
			"--gossip-addr", gossip,
			"--raft-addr", "127.0.0.1:" + strconv.Itoa(ports[1]),
			"--grpc-addr", "127.0.0.1:" + strconv.Itoa(ports[2])}
		if i == 0 {
			seed = gossip
		} else {
			args = append(args, "--join", seed)
		}
		b, err := spawnBroker(MQCluster, bins, args...)
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("cluster node %s: %w", id, err)
		}
		c.nodes = append(c.nodes, b)
		c.ids = append(c.ids, id)
	}
	for i, b := range c.nodes {
		if err := b.waitReady(ctx); err != nil {
			c.stop()
			return nil, fmt.Errorf("cluster node %s: %w", c.ids[i], err)
		}
	}
	var d dialer
	deadline := time.Now().Add(clusterReadyTimeout)
	for i, b := range c.nodes {
		for k := 0; ; k++ {
			err := subscribeOnce(ctx, &d, b.addr, fmt.Sprintf("bench-ready-%d-%d", i, k),
				fmt.Sprintf("bench/ready/%d/%d", i, k), 1, 2*time.Second)
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Now().After(deadline) {
				c.stop()
				return nil, fmt.Errorf("cluster node %s granted no subscribe within %v: %w; log %s:\n%s",
					c.ids[i], clusterReadyTimeout, err, b.log, tail(b.log))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// addrs returns the MQTT addresses of the nodes.
func (c *cluster) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, b := range c.nodes {
		out[i] = b.addr
	}
	return out
}

// kill ends node i with SIGKILL and waits until it is gone.
func (c *cluster) kill(i int) {
	c.killed[i] = true
	c.nodes[i].cmd.Process.Signal(syscall.SIGKILL)
	<-c.nodes[i].exited
}

// stop stops every node (see brokerProc.stop) and reports the ones that
// died on their own.
func (c *cluster) stop() error {
	var errs []error
	for i, b := range c.nodes {
		if c.killed[i] {
			os.RemoveAll(b.dir)
			continue
		}
		if err := b.stop(); err != nil {
			errs = append(errs, fmt.Errorf("cluster node %s: %w", c.ids[i], err))
		}
	}
	return errors.Join(errs...)
}

// leader finds the Raft leader from the nodes' logs: the node whose last
// Raft state change was "entering leader state". It fails unless exactly
// one node says so.
func (c *cluster) leader() (int, error) {
	var leaders []int
	for i, b := range c.nodes {
		if c.killed[i] {
			continue
		}
		f, err := os.Open(b.log)
		if err != nil {
			return -1, err
		}
		st := lastRaftState(bufio.NewScanner(f))
		f.Close()
		if st == "leader" {
			leaders = append(leaders, i)
		}
	}
	if len(leaders) != 1 {
		return -1, fmt.Errorf("cluster: %d nodes' logs say they lead, want 1", len(leaders))
	}
	return leaders[0], nil
}

// lastRaftState returns the state ("leader", "follower", "candidate") named
// by the last line of the log that says Raft is "entering <state> state",
// or "" if none does.
func lastRaftState(sc *bufio.Scanner) string {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	st := ""
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "entering ")
		if i < 0 {
			continue
		}
		rest := line[i+len("entering "):]
		for _, s := range []string{"leader", "follower", "candidate"} {
			if strings.HasPrefix(rest, s+" state") {
				st = s
			}
		}
	}
	return st
}

// subscribeOnce opens a connection to addr, CONNECTs as id and subscribes
// to filter, all within timeout: it fails unless the SUBACK grants qos.
func subscribeOnce(ctx context.Context, d *dialer, addr, id, filter string, qos byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := d.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	// connect and subscribe set deadlines of their own: closing the
	// connection is what bounds them.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := newLeanClient(nc)
	if err := connect(nc, c.r, id, 0); err != nil {
		return err
	}
	return c.subscribe(filter, qos)
}

// newLeanClient wraps nc for handshakes only (CONNECT, SUBSCRIBE), with a
// small read buffer: the connect storm holds ten thousand of them.
func newLeanClient(nc net.Conn) *client {
	return &client{nc: nc, r: bufio.NewReaderSize(nc, 64)}
}
