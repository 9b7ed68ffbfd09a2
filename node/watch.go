package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// watchInterval paces the leader's checks for dead nodes and due wills.
const watchInterval = 200 * time.Millisecond

// watchLoop runs on every node; on the leader it confirms node failures,
// cleans up after them and fires the wills of connections that died with
// their node.
func (n *Node) watchLoop() {
	defer n.wg.Done()
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	w := &watcher{missing: map[string]time.Time{}, orphaned: map[string]time.Time{}, firing: map[string]bool{},
		adopted: map[string]time.Time{}}
	// NodeDown entries about this node seen so far; those replayed when
	// the node starts (up to the commit index of its first contact) are
	// about an earlier run and fence nothing.
	var downs uint64
	caughtUp := false
	// heal counts the route checks still to do: a few after the node was
	// taken for dead or lost contact with the leader, none otherwise (the
	// check walks every local subscription).
	heal, inContact := 0, true
	var lease contactLease
	for tick := 1; ; tick++ {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.checkLease(&lease, time.Now())
		if !caughtUp {
			if n.inContact() && n.fsm.AppliedIndex() >= n.raft.CommitIndex() {
				caughtUp, downs = true, n.fsm.DownCount(n.cfg.NodeID)
			}
		} else if d := n.fsm.DownCount(n.cfg.NodeID); d != downs {
			downs = d
			n.fence()
			heal = 5
		}
		if c := n.inContact(); c != inContact {
			inContact = c
			if c {
				heal = 5
			}
		}
		if heal > 0 && tick%10 == 0 {
			heal--
			n.healRoutes()
		}
		if !n.IsLeader() {
			clear(w.missing)
			clear(w.orphaned)
			continue
		}
		n.watchNodes(w)
		n.fireDueWills(w)
		if tick%5 == 0 {
			for _, nd := range n.fsm.Nodes() {
				if nd.State == fsm.NodeDown {
					n.dropDeadRoutes(nd.ID)
				}
			}
			// Expired retained messages leave the replicated set; readers
			// already skip them, this frees them.
			if now := time.Now().UnixMilli(); n.fsm.RetainedExpiredBy(now) {
				n.proposeAsync(&pb.Command{Op: &pb.Command_RetainedExpire{RetainedExpire: &pb.RetainedExpire{NowUnixMs: now}}})
			}
		}
	}
}

// watcher is the leader's memory between checks.
type watcher struct {
	missing  map[string]time.Time // node id -> first seen absent from gossip
	orphaned map[string]time.Time // will id -> first seen orphaned by a restart
	firing   map[string]bool
	adopted  map[string]time.Time // down node -> first seen with no session left to adopt
	done     chan string
}

// adoptWait bounds how long the wills of a dead node wait for its
// persistent sessions to be adopted, and routeSettle is the time the
// adopting nodes get to route the sessions' subscriptions after that.
const (
	adoptWait   = 10 * time.Second
	routeSettle = time.Second
)

// unadopted returns the nodes that still own persistent sessions.
func (n *Node) unadopted() map[string]bool {
	out := map[string]bool{}
	for _, s := range n.fsm.Sessions() {
		if s.Owner != "" {
			out[s.Owner] = true
		}
	}
	return out
}

// gossipView is what memberlist says of the other nodes: the incarnation
// (run) of every node it has not declared dead.
func (n *Node) gossipView() map[string]string {
	out := map[string]string{}
	for _, m := range n.roster.aliveMembers() {
		out[m.id] = m.run
	}
	return out
}

// watchNodes marks members that gossip declared dead as down for longer
// than NodeDownAfter (their routes go with them: NodeDown), and members
// that came back as up.
func (n *Node) watchNodes(w *watcher) {
	view := n.gossipView()
	now := time.Now()
	candidates := map[string]bool{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			candidates[string(s.ID)] = true
		}
	}
	for _, wl := range n.fsm.Wills() {
		candidates[wl.NodeID] = true
	}
	for id := range candidates {
		if id == n.cfg.NodeID {
			continue
		}
		rec, known := n.fsm.Node(id)
		if run, alive := view[id]; alive {
			delete(w.missing, id)
			if known && (rec.State == fsm.NodeDown || rec.State == fsm.NodeRemoved && !n.wasRemoved(id, run)) {
				n.proposeAsync(&pb.Command{Op: &pb.Command_NodeUp{NodeUp: &pb.NodeUp{NodeId: id}}})
			}
			continue
		}
		since, ok := w.missing[id]
		if !ok {
			w.missing[id] = now
			continue
		}
		// The node closed the connections the cluster acts for once it
		// heard from no leader for ContactLease (checkLease).
		if known || now.Sub(since) < max(n.cfg.NodeDownAfter, n.cfg.ContactLease) {
			continue
		}
		n.log.Warn("node confirmed down", "node", id, "absent_for", now.Sub(since).Round(time.Millisecond).String())
		n.proposeAsync(&pb.Command{Op: &pb.Command_NodeDown{NodeDown: &pb.NodeDown{NodeId: id, AtUnixMs: since.UnixMilli()}}})
		// Its connections are gone: its routes go too, except those its
		// persistent sessions still need (dropDeadRoutes).
		n.dropDeadRoutes(id)
	}
}

// dropDeadRoutes drops the routes of the down node id that no persistent
// session needs from it any more. A session id owns needs the routes of its
// subscriptions until another node adopts it; one that moved to a live node
// needs them until that node routes the subscription itself. Meanwhile a
// publish to such a topic fails at the dead node (the publisher gets no
// success and sends it again) rather than finding no subscriber and being
// acknowledged for nobody.
func (n *Node) dropDeadRoutes(id string) {
	routes := n.fsm.RoutesOf(id)
	if len(routes) == 0 {
		return
	}
	type key struct{ filter, group string }
	dead := make(map[key]bool, len(routes))
	for _, r := range routes {
		dead[key{r.Filter, r.Group}] = true
	}
	routedBy := map[string]map[key]bool{}
	routes1 := func(node string) map[key]bool {
		if m, ok := routedBy[node]; ok {
			return m
		}
		m := map[key]bool{}
		for _, r := range n.fsm.RoutesOf(node) {
			m[key{r.Filter, r.Group}] = true
		}
		routedBy[node] = m
		return m
	}
	needed := map[key]bool{}
	for _, s := range n.fsm.Sessions() {
		for _, sub := range s.Subscriptions {
			group, real, _, err := topic.ParseShare(sub.Filter)
			k := key{real, group}
			if err != nil || !dead[k] || needed[k] {
				continue
			}
			if s.Owner == id || s.Owner == "" || !routes1(s.Owner)[k] {
				needed[k] = true
			}
		}
	}
	for _, r := range routes {
		if !needed[key{r.Filter, r.Group}] {
			n.proposeAsync(&pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{NodeId: id, Filter: r.Filter, Group: r.Group}}})
		}
	}
}

// fireDueWills publishes the wills whose connections died with their node
// (down, or restarted: a will of an earlier run) once their delay passed,
// then drops them.
func (n *Node) fireDueWills(w *watcher) {
	if w.done == nil {
		w.done = make(chan string, 64)
	}
	for {
		select {
		case id := <-w.done:
			delete(w.firing, id)
			continue
		default:
		}
		break
	}
	view := n.gossipView()
	now := time.Now()
	wills := n.fsm.Wills()
	var orphans map[string]bool // down nodes whose sessions are not adopted yet
	for _, wl := range wills {
		if w.firing[wl.ID] {
			continue
		}
		var since time.Time
		if rec, ok := n.fsm.Node(wl.NodeID); ok && rec.State == fsm.NodeDown {
			since = time.UnixMilli(rec.DownAtUnixMs)
			// Its persistent sessions are adopted first, so that their
			// subscribers get the will too (bounded by adoptWait).
			if orphans == nil {
				orphans = n.unadopted()
			}
			if orphans[wl.NodeID] {
				if now.Before(since.Add(adoptWait)) {
					continue
				}
			} else if t, ok := w.adopted[wl.NodeID]; !ok {
				w.adopted[wl.NodeID] = now
				continue
			} else if now.Before(t.Add(routeSettle)) {
				continue
			}
		} else if run, alive := view[wl.NodeID]; wl.NodeID == n.cfg.NodeID || alive {
			if wl.NodeID == n.cfg.NodeID {
				run = n.incarnation
			}
			if run == "" || willRun(wl.ID) == run {
				continue
			}
			t, seen := w.orphaned[wl.ID]
			if !seen {
				t = now
				w.orphaned[wl.ID] = t
			}
			since = t
		} else {
			continue
		}
		delay := time.Duration(min(wl.DelaySeconds, wl.SessionExpirySeconds)) * time.Second
		if now.Before(since.Add(delay)) {
			continue
		}
		w.firing[wl.ID] = true
		delete(w.orphaned, wl.ID)
		go func(wl fsm.Will) {
			defer func() { w.done <- wl.ID }()
			n.fireWill(wl)
		}(wl)
	}
}

// willRun is the run part of a will id (node/run/seq).
func willRun(id string) string {
	parts := strings.Split(id, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[len(parts)-2]
}

// fireWill publishes one will through this node's broker and drops it from
// the cluster once every node with a route has it.
func (n *Node) fireWill(wl fsm.Will) {
	b := n.brk.Load()
	if b == nil {
		return
	}
	m := &broker.Message{Topic: wl.Topic, Payload: wl.Payload, QoS: wl.QoS, Retain: wl.Retain, Origin: wl.ClientID, Will: true}
	if err := packet.DecodeMessageProperties(wl.Properties, &m.Props); err != nil {
		n.log.Warn("will with bad properties", "will", wl.ID, "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Claim it first: the node that held the connection may be back and
	// about to publish it itself; whoever claims it first publishes it.
	cmd, _ := fsm.Encode(&pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: wl.ID, Fire: true}}})
	if _, err := n.Propose(ctx, cmd); err != nil {
		if !isRejection(err) && !errors.Is(err, ErrRejected) {
			n.log.Warn("will not claimed; retrying", "will", wl.ID, "err", err)
		}
		return
	}
	if err := b.PublishWill(ctx, m); err != nil {
		n.log.Warn("claimed will not published to every node", "will", wl.ID, "client_id", wl.ClientID, "err", err)
		return
	}
	n.log.Info("will of a lost connection published", "client_id", wl.ClientID, "node", wl.NodeID, "topic", wl.Topic)
}

// proposeAsync proposes cmd in the background; the next check retries what
// did not commit.
func (n *Node) proposeAsync(cmd *pb.Command) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := n.Propose(ctx, b); err != nil {
			n.log.Debug("proposal failed", "err", err)
		}
	}()
}

// healRoutes gives back routes this node's subscribers need and the cluster
// lost: a leader that took this node for dead (a partition) removed them.
func (n *Node) healRoutes() {
	b := n.brk.Load()
	if b == nil || !n.inContact() {
		return
	}
	have := n.ownRoutes()
	local := b.RoutedFilters(n.holdsHere)
	if len(local) <= len(have) {
		return
	}
	for _, f := range local {
		if have[f] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.SetRoute(ctx, f, 1)
		cancel()
		if err != nil {
			n.log.Warn("lost route not restored", "topic", f, "err", err)
			return
		}
		n.log.Info("lost route restored", "topic", f)
	}
}

// fence closes this node's client connections once it learns that the
// cluster recorded it as down (it was cut off or paused, not dead): the
// leader has published the wills of those connections and other nodes
// have adopted its persistent sessions, so the clients must reconnect.
func (n *Node) fence() {
	b := n.brk.Load()
	if b == nil {
		return
	}
	k := b.Fence()
	n.log.Warn("the cluster took this node for dead; its client connections were closed", "connections", k)
}

// contactLease is what checkLease keeps between checks: when this node
// last led or heard from a leader.
type contactLease struct {
	last    time.Time
	expired bool
}

// checkLease closes the connections whose wills the cluster holds once
// this node has heard from no leader for ContactLease and reaches no
// majority of the voters. A leader on the other side of a partition
// records it as down no sooner than ContactLease after gossip declared it
// dead there (watchNodes) and then publishes those wills: their clients
// must not go on to end those connections normally here. Other
// connections stay, those of persistent sessions included (moving them
// across the partition would hold their deliveries back until the move
// can finish): without quorum a node serves what needs no Raft.
func (n *Node) checkLease(l *contactLease, now time.Time) {
	if n.raft.State() == raft.Leader {
		l.last = now
	} else if c := n.raft.LastContact(); c.After(l.last) {
		l.last = c
	}
	if l.last.IsZero() || now.Sub(l.last) < n.cfg.ContactLease || n.seesQuorum() {
		l.expired = false
		return
	}
	b := n.brk.Load()
	if b == nil {
		return
	}
	k := b.CloseConnections(n.willInCluster)
	if k > 0 || !l.expired {
		n.log.Warn("no leader heard for the contact lease; closed the connections whose wills the cluster holds",
			"connections", k, "out_of_contact", now.Sub(l.last).Round(time.Millisecond).String())
	}
	l.expired = true
}

// seesQuorum reports whether this node reaches a majority of the voters,
// itself included (their forwarding streams open and heard from lately):
// then a leader elsewhere is not about to take it for dead, however long
// it hears from none (an election, a slow link), and its connections stay.
func (n *Node) seesQuorum() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return true
	}
	voters, up := 0, 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if id := string(s.ID); id == n.cfg.NodeID || n.tr.PeerConnected(id) {
			up++
		}
	}
	return voters == 0 || 2*up > voters
}
