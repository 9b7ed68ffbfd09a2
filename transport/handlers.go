package transport

import (
	"context"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// Handlers are what the server calls; the node implements them. A nil
// handler answers its calls with ErrRemote ("not implemented"); a nil
// Deliverer refuses forwarding streams.
type Handlers struct {
	Deliverer  Deliverer
	Proposer   Proposer
	Sessions   SessionHandler
	Membership Membership
	Status     StatusProvider

	// AllowPeer reports whether nodeID is a member of the cluster. Every
	// call except Join is refused with ErrPermissionDenied (gRPC
	// PERMISSION_DENIED) for a caller it rejects; Join is how a node becomes
	// a member, so it is left to Membership.Join, which can read the
	// caller's authenticated id with CallerID. nil allows every caller
	// (only for tests and a cluster of one).
	AllowPeer func(nodeID string) bool
}

// Deliverer takes the messages a peer forwarded.
type Deliverer interface {
	// DeliverForwarded queues msgs (in order) into the local sessions whose
	// subscriptions match, and returns nil once they are queued (durably for
	// persistent sessions): only then is the batch acknowledged to the
	// sender. from is the sender's authenticated node id. A non-nil error
	// acknowledges nothing of the batch: the sender resends it later, so
	// return one only when nothing was queued (for example on shutdown);
	// a message that is bad in itself should be counted and skipped, with
	// nil. Calls for one sender never overlap and never repeat a message
	// that was acknowledged. The messages are views of the batch's buffer,
	// valid until the call returns: copy what you keep, modify nothing.
	// ctx ends with the stream.
	DeliverForwarded(ctx context.Context, from string, msgs []Message) error
}

// Proposer proposes a Raft command on the leader.
type Proposer interface {
	// ProposeLocal proposes cmd (an encoded Command) and returns its log
	// index once applied. Errors: wrap ErrNotLeader when this node is not
	// the leader, ErrRejected (with the index) when the state machine
	// rejected the command, ErrInvalid when cmd is malformed, a context
	// error on timeout; implement Reasoner to tell the caller more.
	ProposeLocal(ctx context.Context, cmd []byte) (index uint64, err error)
}

// SessionHandler serves session takeovers.
type SessionHandler interface {
	// TakeOver closes the local connection of req.ClientId (DISCONNECT
	// 0x8E in MQTT 5.0) and returns the session's queued and in-flight
	// messages, encoded as the node likes. Wrap ErrNotFound when the client
	// is not connected here, ErrRejected when req.Epoch is stale.
	TakeOver(ctx context.Context, req *pb.TakeOverRequest) (state []byte, err error)
}

// Membership changes the Raft configuration (on the leader).
type Membership interface {
	// Join adds the node as a voter or non-voter. Wrap ErrNotLeader when
	// this node is not the leader.
	Join(ctx context.Context, req *pb.JoinRequest) error
	// Leave removes the node. Wrap ErrNotLeader when not the leader.
	Leave(ctx context.Context, req *pb.LeaveRequest) error
}

// StatusProvider describes this node for the admin Status call. The
// transport adds what it knows of each peer's forwarding stream to the
// PeerStatus with the same node id (and a PeerStatus for a peer it knows
// and the node did not list).
type StatusProvider interface {
	Status(ctx context.Context) (*pb.StatusResponse, error)
}

type callerKey struct{}

// CallerID returns the authenticated node id of the caller of a handler
// (from the call's metadata, checked against its certificate under mutual
// TLS), or "" outside a call.
func CallerID(ctx context.Context) string {
	id, _ := ctx.Value(callerKey{}).(string)
	return id
}
