package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/fsm"
	"github.com/mqcluster/mqcluster/transport"
)

// Sentinel errors.
var (
	ErrNotLeader = errors.New("node: not the leader")
	ErrNoLeader  = errors.New("node: no leader (no quorum)")
	ErrClosed    = errors.New("node: closed")
)

// Node is one cluster member.
type Node struct {
	cfg  Config
	log  *slog.Logger
	fsm  *fsm.FSM
	raft *raft.Raft
	ml   *memberlist.Memberlist

	store *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	trans *raft.NetworkTransport

	tr       *transport.Transport
	grpcAddr string
	peersMu  sync.Mutex
	peers    map[string]string // transport peers set: node id -> address
	brk      atomic.Pointer[broker.Server]
	lagging  atomic.Int64 // routes answered before a peer applied them
	metrics  nodeMetrics  // latencies for the admin API (metrics.go)

	// incarnation names this run of the node (in gossip and will ids).
	incarnation string
	willSeq     atomic.Uint64
	ops         *opQueue
	roster      roster // what gossip says of the members (roster.go)
	finished    finishedMoves
	willsMu     sync.Mutex
	// handing counts the hand-ons of sessions in progress (holders.go).
	handingMu sync.Mutex
	handing   map[string]int
	// passedOn spaces the log lines of handed-on messages passed on by
	// this node (handedon.go).
	passedOn sparseLog
	// retried spaces the log lines of hand-ons tried again (sendHandedOn).
	retried sparseLog
	// seenWills names the wills forwarded to this node lately (Forward).
	seenWills timedMap[willKey, struct{}]
	// live names the claims this node made lately for connections it may
	// still be setting up (claims.go).
	live epochs
	// downSeen is when each node was last seen recorded as down (holders.go).
	downMu     sync.Mutex
	downSeen   map[string]time.Time
	wills      map[string]uint8 // will id -> willWanted|willCommitted
	shareMu    sync.Mutex
	shareTurn  map[string]uint64 // share group -> next turn
	removedMu  sync.Mutex
	removedRun map[string]string // node id -> run removed by this leader
	// ended names the claims whose sessions ended here lately (keepEnded).
	ended epochs
	// releasing names the claims whose release this node proposed lately
	// (ReleaseSession): until it commits, the cluster records the session
	// as connected, and it does not expire here (SessionLivesOn).
	releasing epochs

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start opens the node's storage, starts Raft and memberlist, joins the
// seeds and, when it is its part, bootstraps the cluster. It returns before
// a leader exists; use WaitLeader.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "node", "node_id", cfg.NodeID)
	f, err := fsm.New(fsm.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, fsm: f, stop: make(chan struct{}), peers: map[string]string{},
		incarnation: strconv.FormatInt(time.Now().UnixNano(), 36), shareTurn: map[string]uint64{},
		removedRun: map[string]string{}, wills: map[string]uint8{}}
	n.ended.keep, n.live.keep, n.seenWills.keep = keepEnded, liveClaimFor, keepSeenWills
	n.releasing.keep = opRetryFor + 10*time.Second // a release not committed by then was dropped
	n.finished.unacked, n.finished.wait = n.handOnUnacked, keepUnacked
	n.ops = newOpQueue(n)
	if err := n.startRaft(); err != nil {
		n.shutdown()
		return nil, err
	}
	if err := n.startTransport(); err != nil {
		n.shutdown()
		return nil, err
	}
	if err := n.startGossip(); err != nil {
		n.shutdown()
		return nil, err
	}
	n.wg.Add(8)
	go n.reconnectLoop()
	go n.adoptLoop()
	go n.claimsLoop()
	go n.holdLoop()
	go n.bootstrapLoop()
	go n.reconcileLoop()
	go n.watchLoop()
	go func() { defer n.wg.Done(); n.ops.run(n.stop) }()
	return n, nil
}

// startRaft opens data-dir/raft/ and starts Raft on it.
func (n *Node) startRaft() error {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return fmt.Errorf("raft log store: %w", err)
	}
	n.store = store
	hl := hclogFor(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		return fmt.Errorf("raft snapshots: %w", err)
	}
	n.snaps = snaps
	var advertise net.Addr
	if n.cfg.RaftAdvertise != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise); err != nil {
			return fmt.Errorf("raft_advertise: %w", err)
		}
	}
	trans, err := n.raftTransport(advertise, hl)
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	n.trans = trans
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.Logger = hl
	// Proposals queued while a commit is in flight go out as one batch
	// (one fsync), so a connect storm does not serialize on the disk.
	rc.BatchApplyCh = true
	// Half of raft's defaults: a dead leader is replaced within about
	// 1-2 s on a LAN.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	if err := n.recoverFromPeersJSON(rc, dir, store, snaps, trans); err != nil {
		return err
	}
	r, err := raft.NewRaft(rc, timedFSM{n.fsm, &n.metrics.apply}, store, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	n.raft = r
	return nil
}

// RaftAddr is the address peers reach this node's Raft at.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// FSM is the node's replicated state.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// ID is the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and Raft address ("" when none).
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// WaitLeader waits until a leader is known.
func (n *Node) WaitLeader(ctx context.Context) (string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-n.stop:
			return "", ErrClosed
		case <-t.C:
		}
	}
}

// Propose applies cmd (an fsm.Encode'd command) through Raft and returns
// its log index, or the state machine's rejection; a follower forwards it to
// the leader through the transport.
//
// While there is no leader, or leadership moves during the proposal, it
// tries again until ctx ends: every command sets state, so applying one
// twice is harmless.
func (n *Node) Propose(ctx context.Context, cmd []byte) (uint64, error) {
	defer n.metrics.propose.since(time.Now())
	for {
		var idx uint64
		var err error
		if n.raft.State() != raft.Leader {
			idx, err = n.forwardPropose(ctx, cmd)
		} else {
			idx, err = n.proposeLocal(ctx, cmd)
		}
		if err == nil || !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
			return idx, err
		}
		select {
		case <-ctx.Done():
			return idx, err
		case <-n.stop:
			return idx, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// proposeLocal applies cmd on this node, which must lead.
func (n *Node) proposeLocal(ctx context.Context, cmd []byte) (uint64, error) {
	if n.raft.State() != raft.Leader {
		if id, _ := n.Leader(); id == "" {
			return 0, ErrNoLeader
		}
		return 0, ErrNotLeader
	}
	timeout := n.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	start := time.Now()
	f := n.raft.Apply(cmd, timeout)
	err := f.Error()
	n.metrics.commit.since(start)
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return 0, err
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return f.Index(), err
	}
	return f.Index(), nil
}

// Remove takes a member out of the Raft configuration (an admin command, or
// a node's own graceful leave). Only the leader can.
func (n *Node) Remove(id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	return n.removeMember(ctx, id)
}

// Leave removes this node from the cluster on purpose (scale-down): it
// leaves memberlist, and a leader removes itself from Raft. A follower's
// leave goes to the leader through the transport.
func (n *Node) Leave() error {
	var err error
	if n.raft.State() == raft.Leader {
		err = n.Remove(n.cfg.NodeID)
	} else {
		err = n.leaveThroughLeader()
	}
	if n.ml != nil {
		if lerr := n.ml.Leave(2 * time.Second); lerr != nil && err == nil {
			err = lerr
		}
	}
	return err
}

// Close stops the node without leaving the cluster: a restart with the same
// data directory rejoins as the same member. It is idempotent.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() { err = n.shutdown() })
	return err
}

func (n *Node) shutdown() error {
	close(n.stop)
	n.wg.Wait()
	var errs []error
	if n.ml != nil {
		errs = append(errs, n.ml.Shutdown())
	}
	if n.tr != nil {
		errs = append(errs, n.tr.Close())
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}
