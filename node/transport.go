package node

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mqcluster/mqcluster/fsm"
	"github.com/mqcluster/mqcluster/transport"
)

// errNoBroker refuses forwarded messages while no broker runs on this node:
// the sender keeps them and retries, then counts them as undelivered.
var errNoBroker = errors.New("node: no broker to deliver to")

// startTransport starts the gRPC server other nodes call.
func (n *Node) startTransport() error {
	cfg := transport.DefaultConfig()
	cfg.NodeID = n.cfg.NodeID
	cfg.ListenAddr = n.cfg.GRPCAddr
	cfg.CertFile, cfg.KeyFile, cfg.CAFile = n.cfg.TLSCertFile, n.cfg.TLSKeyFile, n.cfg.TLSCAFile
	cfg.Logger = n.log
	// QoS 0 messages to a peer that falls behind are dropped (counted) once
	// its outbox is full: leave room for bursts.
	cfg.OutboxMessages, cfg.OutboxBytes = 100000, 64<<20
	h := transport.Handlers{
		Proposer:   proposer{n},
		Deliverer:  deliverer{n},
		Sessions:   sessions{n},
		Membership: membership{n},
		AllowPeer:  n.isMember,
	}
	tr, err := transport.New(cfg, h)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	addr, err := tr.Start()
	if err != nil {
		tr.Close()
		return fmt.Errorf("transport: %w", err)
	}
	n.tr, n.grpcAddr = tr, addr.String()
	n.wg.Add(1)
	go n.publishApplied()
	return nil
}

// GRPCAddr is where this node's transport listens.
func (n *Node) GRPCAddr() string { return n.grpcAddr }

// isMember admits callers that gossip has announced.
func (n *Node) isMember(id string) bool {
	// A member gossip has declared dead may call: it is alive after all
	// (a healed partition), and refusing it would keep it out.
	return n.roster.known(id)
}

// syncPeers tells the transport where every other member listens.
func (n *Node) syncPeers() {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for _, m := range n.members() {
		if m.id == n.cfg.NodeID || m.grpc == "" || n.peers[m.id] == m.grpc {
			continue
		}
		if err := n.tr.SetPeer(m.id, m.grpc); err != nil {
			n.log.Warn("transport peer not set", "peer", m.id, "err", err)
			continue
		}
		n.peers[m.id] = m.grpc
	}
}

// publishApplied keeps the transport's view of this node's applied index
// current, so that peers can wait for it.
func (n *Node) publishApplied() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-n.stop; cancel() }()
	for {
		idx := n.fsm.AppliedIndex()
		n.tr.SetAppliedIndex(idx)
		if err := n.fsm.WaitApplied(ctx, idx+1); err != nil {
			return
		}
	}
}

// forwardPropose sends a proposal to the leader's transport.
func (n *Node) forwardPropose(ctx context.Context, cmd []byte) (uint64, error) {
	leader, _ := n.Leader()
	if leader == "" {
		return 0, ErrNoLeader
	}
	addr := ""
	for _, m := range n.members() {
		if m.id == leader {
			addr = m.grpc
		}
	}
	if addr == "" {
		return 0, fmt.Errorf("%w: leader %s not reachable through gossip yet", ErrNoLeader, leader)
	}
	idx, err := n.tr.Propose(ctx, addr, cmd)
	var pe *transport.ProposeError
	switch {
	case err == nil:
		return idx, nil
	case errors.Is(err, transport.ErrNotLeader):
		return 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.As(err, &pe) && errors.Is(err, transport.ErrRejected):
		return pe.Index, fmt.Errorf("%w: %s", ErrRejected, pe.Message)
	}
	return 0, err
}

// ErrRejected is the state machine's refusal of a proposal made through the
// leader (a stale epoch, an invalid command).
var ErrRejected = errors.New("node: rejected by the state machine")

// proposer serves proposals from followers.
type proposer struct{ n *Node }

func (p proposer) ProposeLocal(ctx context.Context, cmd []byte) (uint64, error) {
	idx, err := p.n.proposeLocal(ctx, cmd)
	switch {
	case err == nil:
		return idx, nil
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
		return 0, fmt.Errorf("%w: %w", transport.ErrNotLeader, err)
	case isRejection(err):
		return idx, fmt.Errorf("%w: %w", transport.ErrRejected, err)
	}
	return 0, err
}

// isRejection reports whether err is the state machine refusing a command
// (as every replica does), not a failure to commit it.
func isRejection(err error) bool {
	return errors.Is(err, fsm.ErrInvalid) || errors.Is(err, fsm.ErrStaleEpoch) ||
		errors.Is(err, fsm.ErrNoSession) || errors.Is(err, fsm.ErrNodeRemoved) || errors.Is(err, fsm.ErrNoWill) ||
		errors.Is(err, fsm.ErrWillFired)
}

// rejectedFor reports whether err is the state machine's rejection for
// reason, on this node (errors.Is) or through the leader (ErrRejected, with
// the reason in its message).
func rejectedFor(err, reason error) bool {
	return errors.Is(err, reason) || errors.Is(err, ErrRejected) && strings.Contains(err.Error(), reason.Error())
}
