package node

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// meta is what a node tells the others about itself through memberlist.
type meta struct {
	Raft string `json:"raft"`
	GRPC string `json:"grpc"`
	Run  string `json:"run,omitempty"` // this run of the node (its incarnation)
}

// delegate serves this node's metadata to memberlist.
type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// startGossip starts memberlist and joins the seeds.
func (n *Node) startGossip() error {
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("gossip_addr: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	if n.cfg.FastGossip {
		mc = memberlist.DefaultLocalConfig()
	}
	mc.Name = n.cfg.NodeID
	// A restarted node (a pod with a new address) takes its name back once
	// the old incarnation is declared dead.
	mc.DeadNodeReclaimTime = 10 * time.Second
	if n.cfg.FastGossip {
		mc.DeadNodeReclaimTime = 200 * time.Millisecond
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = 0
	m, _ := json.Marshal(meta{Raft: n.RaftAddr(), GRPC: n.grpcAddr, Run: n.incarnation})
	mc.Delegate = &delegate{meta: m}
	mc.Events = &n.roster
	mc.Logger = nil
	mc.LogOutput = logWriter{n.log.With("component", "memberlist")}
	if len(n.cfg.GossipKey) > 0 {
		mc.SecretKey = n.cfg.GossipKey
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("memberlist: %w", err)
	}
	n.ml = ml
	if len(n.cfg.Join) > 0 {
		n.wg.Add(1)
		go n.joinLoop()
	}
	return nil
}

// GossipAddr is the address other nodes join through.
func (n *Node) GossipAddr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// joinLoop joins through the seeds, and joins again until a leader talks
// to this node: a restarted node whose old incarnation is not yet declared
// dead is refused as a conflict at first, and takes its name back on a
// later join.
func (n *Node) joinLoop() {
	defer n.wg.Done()
	wait := 100 * time.Millisecond
	for {
		if k, err := n.ml.Join(n.cfg.Join); k > 0 {
			n.log.Debug("reached seeds", "seeds_reached", k)
		} else {
			n.log.Debug("seeds not reachable yet", "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		if n.inContact() {
			n.log.Info("joined the cluster")
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// inContact reports whether this node leads or heard from a leader lately.
func (n *Node) inContact() bool {
	if n.raft.State() == raft.Leader {
		return true
	}
	last := n.raft.LastContact()
	return n.raft.Leader() != "" && !last.IsZero() && time.Since(last) < 2*time.Second
}

// member is one node as memberlist announces it.
type member struct {
	id, raft, grpc string
	run            string // the node's incarnation
}

func (n *Node) members() []member { return n.roster.aliveMembers() }

// bootstrapLoop bootstraps Raft once BootstrapExpect members see each
// other, if this node has no Raft state yet and has the lowest id among
// them; every other node waits to be added by the leader.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	if n.cfg.BootstrapExpect == 0 {
		return
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		has, err := raft.HasExistingState(n.store, n.store, n.snaps)
		if err == nil && has {
			return
		}
		if n.raft.Leader() != "" {
			return // added to a running cluster
		}
		ms := n.members()
		if len(ms) >= n.cfg.BootstrapExpect {
			ms = ms[:n.cfg.BootstrapExpect]
			if ms[0].id == n.cfg.NodeID {
				var servers []raft.Server
				for _, m := range ms {
					servers = append(servers, raft.Server{ID: raft.ServerID(m.id), Address: raft.ServerAddress(m.raft), Suffrage: raft.Voter})
				}
				err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
				if err != nil && err != raft.ErrCantBootstrap {
					n.log.Error("bootstrap failed", "err", err)
				} else {
					n.log.Info("bootstrapped the cluster", "voters", len(servers))
				}
				return
			}
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// reconcileLoop, on the leader, adds members that announced themselves
// through memberlist to Raft (voters up to MaxVoters, non-voters beyond)
// and updates the address of one that came back on a new one. It never
// removes a member: a failure seen by gossip is not a leave.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.syncPeers()
		if n.raft.State() != raft.Leader {
			continue
		}
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		known := map[raft.ServerID]raft.Server{}
		voters := 0
		for _, s := range f.Configuration().Servers {
			known[s.ID] = s
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		for _, m := range n.members() {
			if n.wasRemoved(m.id, m.run) {
				continue // removed on purpose; a new run of it may come back
			}
			s, ok := known[raft.ServerID(m.id)]
			switch {
			case !ok && voters < n.cfg.MaxVoters:
				voters++
				n.addServer(m, true)
			case !ok:
				n.addServer(m, false)
			case string(s.Address) != m.raft:
				n.addServer(m, s.Suffrage == raft.Voter)
			}
		}
	}
}

func (n *Node) addServer(m member, voter bool) {
	var f raft.IndexFuture
	if voter {
		f = n.raft.AddVoter(raft.ServerID(m.id), raft.ServerAddress(m.raft), 0, n.cfg.ApplyTimeout)
	} else {
		f = n.raft.AddNonvoter(raft.ServerID(m.id), raft.ServerAddress(m.raft), 0, n.cfg.ApplyTimeout)
	}
	if err := f.Error(); err != nil {
		n.log.Warn("adding a member to raft failed", "peer", m.id, "err", err)
		return
	}
	n.log.Info("member added to raft", "peer", m.id, "voter", voter, "raft_addr", m.raft)
}
