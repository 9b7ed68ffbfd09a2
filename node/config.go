package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config is one node's cluster configuration.
type Config struct {
	// NodeID is stable across restarts (the StatefulSet pod name).
	NodeID string
	// DataDir holds raft/ (log, stable store, snapshots).
	DataDir string
	// RaftAddr is the address Raft listens on (host:port; port 0 picks one).
	RaftAddr string
	// RaftAdvertise is the address peers dial; empty: the bound address.
	RaftAdvertise string
	// GRPCAddr is where the transport (node-to-node gRPC) listens.
	GRPCAddr string
	// GossipAddr is memberlist's bind address (host:port; port 0 picks one).
	GossipAddr string
	// Join are memberlist seeds (host:port); a DNS name may resolve to
	// several addresses, as a headless Service gives.
	Join []string
	// BootstrapExpect: once this many members see each other, the lowest
	// node id bootstraps Raft with all of them as voters. 1 is a cluster of
	// one (the embedded default); 0 never bootstraps (join an existing
	// cluster only).
	BootstrapExpect int
	// MaxVoters caps the voters; later nodes join as non-voters.
	MaxVoters int
	// GossipKey, when set (16, 24 or 32 bytes), encrypts memberlist traffic.
	GossipKey []byte
	// TLSCertFile, TLSKeyFile and TLSCAFile, all set or none, make the gRPC
	// transport between nodes mutual TLS with a cluster CA.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// FastGossip uses memberlist's local-network timings (tests).
	FastGossip bool
	// ApplyTimeout bounds one proposal.
	ApplyTimeout time.Duration
	// ReconcileInterval is how often the leader aligns Raft's configuration
	// with the members that announced themselves.
	ReconcileInterval time.Duration
	// NodeDownAfter is how long the leader waits, once gossip has declared
	// a node dead, before it records the node as down: its routes go and
	// the wills of its connections start their delay.
	NodeDownAfter time.Duration
	// ContactLease is how long a node that hears from no leader, and
	// reaches no majority of the voters, keeps the connections whose wills
	// the cluster holds. Past it, it closes them (0x9C): a leader on the
	// other side of a partition publishes those wills, and does not record
	// a node as down before it has been gone for ContactLease (nor before
	// NodeDownAfter).
	ContactLease time.Duration
	// SessionHold bounds how long a session that moved holds its queue
	// for nodes that may still hold older messages of it (a node killed
	// or cut off with the session): past it, newer messages go out ahead
	// of whatever such a node hands on later (holders.go). 0, the
	// default, holds nothing: under long runs of partitions, holding
	// delayed messages past their sessions' life (see docs/reliability.md).
	SessionHold time.Duration
	Logger      *slog.Logger
}

// DefaultConfig is a cluster of one on loopback ports chosen by the system.
func DefaultConfig() Config {
	return Config{
		RaftAddr:          "127.0.0.1:0",
		GossipAddr:        "127.0.0.1:0",
		GRPCAddr:          "127.0.0.1:0",
		BootstrapExpect:   1,
		MaxVoters:         5,
		ApplyTimeout:      5 * time.Second,
		ReconcileInterval: 500 * time.Millisecond,
		NodeDownAfter:     time.Second,
		ContactLease:      2 * time.Second,
	}
}

// Validate reports the first bad setting by name.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node_id: required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	for name, a := range map[string]string{"raft_addr": c.RaftAddr, "gossip_addr": c.GossipAddr, "grpc_addr": c.GRPCAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, a, err))
		}
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("bootstrap_expect %d: want >= 0", c.BootstrapExpect))
	}
	if c.MaxVoters < 1 {
		errs = append(errs, fmt.Errorf("max_voters %d: want >= 1", c.MaxVoters))
	}
	if n := len(c.GossipKey); n != 0 && n != 16 && n != 24 && n != 32 {
		errs = append(errs, fmt.Errorf("gossip_key: %d bytes, want 16, 24 or 32", n))
	}
	if c.ApplyTimeout <= 0 || c.ReconcileInterval <= 0 || c.NodeDownAfter <= 0 || c.ContactLease <= 0 {
		errs = append(errs, errors.New("apply_timeout, reconcile_interval, node_down_after and contact_lease: want > 0"))
	}
	if c.SessionHold < 0 {
		errs = append(errs, errors.New("session_hold: want >= 0"))
	}
	return errors.Join(errs...)
}
