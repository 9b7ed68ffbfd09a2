package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node states as the nemesis leaves them.
const (
	stateUp     = "up"
	stateKilled = "killed"
	statePaused = "paused"
)

// Node is one mqcluster process in its namespace, restarted on the same
// data directory after a kill.
type Node struct {
	Index   int
	ID      string
	NS      string
	IP      string
	DataDir string
	LogPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	state    string
	run      int
	expected bool // the current process is meant to exit (killed or stopped)
	exited   chan struct{}
}

// Addr is the node's MQTT address.
func (n *Node) Addr() string { return net.JoinHostPort(n.IP, "1883") }

// State is up, killed or paused.
func (n *Node) State() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// Cluster is the run's nodes.
type Cluster struct {
	Nodes []*Node
	bin   string
	hist  *History
	extra []string
}

// NewCluster prepares n nodes in the network's namespaces; dir holds
// their data directories and logs.
func NewCluster(nw *Network, bin, dir string, hist *History, extra []string) *Cluster {
	c := &Cluster{bin: bin, hist: hist, extra: extra}
	for i := range nw.NodeNS {
		c.Nodes = append(c.Nodes, &Node{Index: i, ID: fmt.Sprintf("n%d", i), NS: nw.NodeNS[i], IP: nw.NodeIPs[i],
			DataDir: filepath.Join(dir, "data", fmt.Sprintf("n%d", i)), LogPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			state: stateKilled})
	}
	return c
}

func (c *Cluster) args(n *Node) []string {
	var join []string
	for _, o := range c.Nodes {
		if o != n {
			join = append(join, net.JoinHostPort(o.IP, "7946"))
		}
	}
	a := []string{"netns", "exec", n.NS, c.bin, "serve",
		"--listen", n.Addr(), "--data-dir", n.DataDir, "--log-format", "json",
		"--node-id", n.ID, "--bootstrap-expect", strconv.Itoa(len(c.Nodes)), "--join", strings.Join(join, ","),
		"--cluster-raft-addr", net.JoinHostPort(n.IP, "7000"),
		"--cluster-gossip-addr", net.JoinHostPort(n.IP, "7946"),
		"--cluster-grpc-addr", net.JoinHostPort(n.IP, "7001"),
		"--auth-allow-anonymous",
		// Queues never overflow in a run: a full queue is a documented drop, not a loss.
		"--limits-max-queued-messages", "1000000", "--limits-max-queued-bytes", "1000000000"}
	return append(a, c.extra...)
}

// Start starts node n (again, on the same data directory).
func (c *Cluster) Start(n *Node) error {
	if err := os.MkdirAll(n.DataDir, 0o750); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.run++
	fmt.Fprintf(logf, "{\"jepsen_lite\":\"start\",\"run\":%d,\"t\":%d}\n", n.run, c.hist.Now())
	cmd := exec.Command("ip", c.args(n)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The node dies with the harness, whatever kills the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.cmd, n.state, n.expected = cmd, stateUp, false
	exited := make(chan struct{})
	n.exited = exited
	run := n.run
	c.hist.Add(Op{Type: "info", F: "node-start", Node: n.Index, Value: strconv.Itoa(run)})
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		expected := n.expected
		n.mu.Unlock()
		if !expected {
			c.hist.Add(Op{Type: "info", F: "node-exit", Node: n.Index, Error: fmt.Sprint(err), Value: strconv.Itoa(run)})
		}
		close(exited)
	}()
	return nil
}

// Kill sends SIGKILL and waits for the process to go.
func (c *Cluster) Kill(n *Node) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	if cmd == nil || n.state == stateKilled {
		n.mu.Unlock()
		return
	}
	n.expected = true
	n.state = stateKilled
	n.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Process.Signal(syscall.SIGCONT)
	<-exited
}

// Expect marks node n's process as meant to exit by itself (a graceful
// leave): its exit is no crash, and it counts as down.
func (c *Cluster) Expect(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.expected = true
	n.state = stateKilled
}

// Pause sends SIGSTOP; Resume SIGCONT.
func (c *Cluster) Pause(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == stateUp {
		n.cmd.Process.Signal(syscall.SIGSTOP)
		n.state = statePaused
	}
}

// Resume continues a paused node.
func (c *Cluster) Resume(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == statePaused {
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.state = stateUp
	}
}

// Stop ends every node: SIGTERM, then SIGKILL after a grace period.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		n.mu.Lock()
		cmd, exited, st := n.cmd, n.exited, n.state
		n.expected = true
		n.state = stateKilled
		n.mu.Unlock()
		if cmd == nil || st == stateKilled {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
			}
		}()
	}
	wg.Wait()
}

// Live are the nodes that are up (not killed, not paused).
func (c *Cluster) Live() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.State() == stateUp {
			out = append(out, n)
		}
	}
	return out
}

// WaitListening waits until every up node accepts TCP on its MQTT port.
func (c *Cluster) WaitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.Live() {
		for {
			conn, err := net.DialTimeout("tcp", n.Addr(), time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s not listening on %s: %v", n.ID, n.Addr(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

var (
	leaderRE = regexp.MustCompile(`entering leader state`)
	leaveRE  = regexp.MustCompile(`entering (follower|candidate) state`)
)

// Leader guesses the current leader from the node logs: the up node whose
// last Raft state change was to leader. -1 when none is known.
func (c *Cluster) Leader() int {
	best := -1
	for _, n := range c.Nodes {
		if n.State() != stateUp {
			continue
		}
		f, err := os.Open(n.LogPath)
		if err != nil {
			continue
		}
		leading := false
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.Contains(line, `"jepsen_lite":"start"`):
				leading = false
			case leaderRE.MatchString(line):
				leading = true
			case leaveRE.MatchString(line):
				leading = false
			}
		}
		f.Close()
		if leading {
			best = n.Index
		}
	}
	return best
}
