package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// server implements pb.ClusterServer over the Handlers.
type server struct {
	pb.UnimplementedClusterServer
	t *Transport
}

func unimplemented(what string) error {
	return status.Errorf(codes.Unimplemented, "this node serves no %s", what)
}

func (s *server) Propose(ctx context.Context, req *pb.ProposeRequest) (*pb.ProposeResponse, error) {
	p := s.t.h.Proposer
	if p == nil {
		return nil, unimplemented("Propose")
	}
	if len(req.Command) == 0 {
		return &pb.ProposeResponse{Code: pb.ProposeCode_PROPOSE_CODE_INVALID, Error: "empty command"}, nil
	}
	idx, err := p.ProposeLocal(ctx, req.Command)
	resp := &pb.ProposeResponse{Index: idx}
	if err != nil {
		resp.Code = proposeCode(err)
		resp.Error = err.Error()
		var r Reasoner
		if errors.As(err, &r) {
			resp.Reason = r.Reason()
		}
	}
	return resp, nil
}

func proposeCode(err error) pb.ProposeCode {
	switch {
	case errors.Is(err, ErrNotLeader):
		return pb.ProposeCode_PROPOSE_CODE_NOT_LEADER
	case errors.Is(err, ErrRejected):
		return pb.ProposeCode_PROPOSE_CODE_REJECTED
	case errors.Is(err, ErrInvalid):
		return pb.ProposeCode_PROPOSE_CODE_INVALID
	case errors.Is(err, context.DeadlineExceeded):
		return pb.ProposeCode_PROPOSE_CODE_TIMEOUT
	}
	return pb.ProposeCode_PROPOSE_CODE_FAILED
}

func proposeSentinel(c pb.ProposeCode) error {
	switch c {
	case pb.ProposeCode_PROPOSE_CODE_NOT_LEADER:
		return ErrNotLeader
	case pb.ProposeCode_PROPOSE_CODE_REJECTED:
		return ErrRejected
	case pb.ProposeCode_PROPOSE_CODE_INVALID:
		return ErrInvalid
	case pb.ProposeCode_PROPOSE_CODE_TIMEOUT:
		return context.DeadlineExceeded
	}
	return ErrRemote
}

func (s *server) TakeOver(req *pb.TakeOverRequest, stream pb.Cluster_TakeOverServer) error {
	h := s.t.h.Sessions
	if h == nil {
		return unimplemented("TakeOver")
	}
	if req.ClientId == "" || req.NewOwner == "" {
		return status.Error(codes.InvalidArgument, "client_id and new_owner are required")
	}
	ctx, cancel := context.WithTimeout(stream.Context(), s.t.cfg.HandlerTimeout)
	defer cancel()
	state, err := h.TakeOver(ctx, req)
	if err != nil {
		return statusError(err)
	}
	// Chunks of half the message limit: room for the framing, and for a
	// receiver with a somewhat smaller limit.
	chunk := s.t.cfg.MaxMsgSize / 2
	resp := &pb.TakeOverResponse{TotalSize: uint64(len(state))}
	for first := true; first || len(state) > 0; first = false {
		n := min(len(state), chunk)
		resp.State, state = state[:n], state[n:]
		if err := stream.Send(resp); err != nil {
			return err
		}
		resp.TotalSize = 0
	}
	return nil
}

func (s *server) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	h := s.t.h.Membership
	if h == nil {
		return nil, unimplemented("Join")
	}
	if req.NodeId == "" || len(req.NodeId) > maxNodeIDLen || req.RaftAddr == "" || req.GrpcAddr == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id, raft_addr and grpc_addr are required")
	}
	if err := h.Join(ctx, req); err != nil {
		return nil, statusError(err)
	}
	return &pb.JoinResponse{}, nil
}

func (s *server) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	h := s.t.h.Membership
	if h == nil {
		return nil, unimplemented("Leave")
	}
	if req.NodeId == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id is required")
	}
	if err := h.Leave(ctx, req); err != nil {
		return nil, statusError(err)
	}
	return &pb.LeaveResponse{}, nil
}

func (s *server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	resp := &pb.StatusResponse{NodeId: s.t.cfg.NodeID, AppliedIndex: s.t.local.Load()}
	if h := s.t.h.Status; h != nil {
		r, err := h.Status(ctx)
		if err != nil {
			return nil, statusError(err)
		}
		if r != nil {
			resp = r
		}
	}
	s.t.addPeerStatus(resp)
	return resp, nil
}

// addPeerStatus adds the transport's view of each peer to resp.
func (t *Transport) addPeerStatus(resp *pb.StatusResponse) {
	byID := map[string]*pb.PeerStatus{}
	for _, p := range resp.Peers {
		byID[p.NodeId] = p
	}
	for _, ps := range t.Stats().Peers {
		p := byID[ps.NodeID]
		if p == nil {
			p = &pb.PeerStatus{NodeId: ps.NodeID, GrpcAddr: ps.Addr}
			resp.Peers = append(resp.Peers, p)
		}
		p.StreamConnected = ps.Connected
		p.AppliedIndex = ps.AppliedIndex
		p.Forwarded = ps.Enqueued
		p.Acked = ps.Acked
		p.Retried = ps.Retried
		p.Dropped = ps.Dropped
		p.OutboxDepth = uint32(ps.OutboxDepth)
	}
	slices.SortFunc(resp.Peers, func(a, b *pb.PeerStatus) int { return strings.Compare(a.NodeId, b.NodeId) })
}

// Client side. addr is the peer's gRPC address; a call uses the peer's
// connection when one goes there. A ctx without deadline gets
// Config.CallTimeout.

func (t *Transport) client(ctx context.Context, addr string) (pb.ClusterClient, context.Context, context.CancelFunc, error) {
	c, err := t.conn(addr, "")
	if err != nil {
		return nil, nil, nil, err
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, t.cfg.CallTimeout)
	}
	return pb.NewClusterClient(c), ctx, cancel, nil
}

// Propose sends cmd (an encoded Command) to the leader at addr and returns
// its log index once applied there. A failure on the leader's side is a
// *ProposeError (wrapping ErrNotLeader, ErrRejected with the index,
// ErrInvalid, context.DeadlineExceeded or ErrRemote); a failure to reach it
// wraps ErrUnavailable, ErrTooLarge, ErrPermissionDenied or a context error.
func (t *Transport) Propose(ctx context.Context, addr string, cmd []byte) (uint64, error) {
	c, ctx, cancel, err := t.client(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer cancel()
	resp, err := c.Propose(ctx, &pb.ProposeRequest{Command: cmd})
	if err != nil {
		return 0, fmt.Errorf("propose to %s: %w", addr, fromStatus(err))
	}
	if resp.Code != pb.ProposeCode_PROPOSE_CODE_OK {
		return resp.Index, &ProposeError{Index: resp.Index, Reason: resp.Reason, Message: resp.Error, err: proposeSentinel(resp.Code)}
	}
	return resp.Index, nil
}

// TakeOver asks the node at addr to give up the connection of
// req.ClientId and returns the session state it held (at most
// Config.MaxTakeOverBytes). Errors wrap ErrNotFound (not connected there),
// ErrRejected (stale epoch), or a transport sentinel.
//
// The state is gone from the old node once it answered: if the answer is
// lost on the way (an error here after the node closed the connection),
// so is the state, unless the node keeps it until the new owner confirms.
func (t *Transport) TakeOver(ctx context.Context, addr string, req *pb.TakeOverRequest) ([]byte, error) {
	c, ctx, cancel, err := t.client(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer cancel()
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("take over %q at %s: %w", req.GetClientId(), addr, err)
	}
	stream, err := c.TakeOver(ctx, req)
	if err != nil {
		return fail(fromStatus(err))
	}
	var state []byte
	var total uint64
	for first := true; ; first = false {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) && !first {
			break
		}
		if err != nil {
			return fail(fromStatus(err))
		}
		if first {
			total = resp.TotalSize
			if total > uint64(t.cfg.MaxTakeOverBytes) {
				return fail(fmt.Errorf("%w: session state of %d bytes, limit %d", ErrTooLarge, total, t.cfg.MaxTakeOverBytes))
			}
			state = make([]byte, 0, total)
		}
		if uint64(len(state)+len(resp.State)) > total {
			return fail(fmt.Errorf("%w: more session state than the announced %d bytes", ErrRemote, total))
		}
		state = append(state, resp.State...)
	}
	if uint64(len(state)) != total {
		return fail(fmt.Errorf("%w: %d bytes of session state, %d announced", ErrRemote, len(state), total))
	}
	return state, nil
}

// Join asks the leader at addr to add a node. Errors wrap ErrNotLeader
// (ask the leader), ErrInvalid, or a transport sentinel.
func (t *Transport) Join(ctx context.Context, addr string, req *pb.JoinRequest) error {
	c, ctx, cancel, err := t.client(ctx, addr)
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := c.Join(ctx, req); err != nil {
		return fmt.Errorf("join %q at %s: %w", req.GetNodeId(), addr, fromStatus(err))
	}
	return nil
}

// Leave asks the leader at addr to remove a node.
func (t *Transport) Leave(ctx context.Context, addr string, req *pb.LeaveRequest) error {
	c, ctx, cancel, err := t.client(ctx, addr)
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := c.Leave(ctx, req); err != nil {
		return fmt.Errorf("leave %q at %s: %w", req.GetNodeId(), addr, fromStatus(err))
	}
	return nil
}

// Status returns the admin status of the node at addr.
func (t *Transport) Status(ctx context.Context, addr string) (*pb.StatusResponse, error) {
	c, ctx, cancel, err := t.client(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer cancel()
	resp, err := c.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", addr, fromStatus(err))
	}
	return resp, nil
}
