package transport

import (
	"context"
	"runtime/debug"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// mdNodeID is the metadata key of the caller's node id.
const mdNodeID = "mqcluster-node-id"

// clientUnary and clientStream add this node's id to every call.
func (t *Transport) clientUnary(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx = metadata.AppendToOutgoingContext(ctx, mdNodeID, t.cfg.NodeID)
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (t *Transport) clientStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, mdNodeID, t.cfg.NodeID)
	return streamer(ctx, desc, cc, method, opts...)
}

// serverUnary recovers a panic of the handler, authenticates the caller and
// bounds the handler's time.
func (t *Transport) serverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (resp any, err error) {
	var caller string
	defer t.recoverPanic(info.FullMethod, &caller, &err)
	caller, err = t.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, callerKey{}, caller), t.cfg.HandlerTimeout)
	defer cancel()
	return handler(ctx, req)
}

// serverStream recovers a panic of the handler and authenticates the caller.
func (t *Transport) serverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo,
	handler grpc.StreamHandler) (err error) {
	var caller string
	defer t.recoverPanic(info.FullMethod, &caller, &err)
	caller, err = t.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, caller)})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

func (t *Transport) recoverPanic(method string, caller *string, err *error) {
	if r := recover(); r != nil {
		t.log.Error("handler panic", "method", method, "peer", *caller, "panic", r, "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}

// authenticate returns the caller's node id: the one value of mdNodeID, which
// with mutual TLS the verified client certificate must name, and which must
// be a member (except for Join).
func (t *Transport) authenticate(ctx context.Context, method string) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(mdNodeID)
	if len(ids) != 1 || ids[0] == "" || len(ids[0]) > maxNodeIDLen {
		return "", t.deny(ctx, method, "", "no node id")
	}
	id := ids[0]
	if t.tls != nil {
		p, _ := peer.FromContext(ctx)
		var info credentials.TLSInfo
		if p != nil {
			info, _ = p.AuthInfo.(credentials.TLSInfo)
		}
		chains := info.State.VerifiedChains
		if len(chains) == 0 || len(chains[0]) == 0 {
			return "", t.deny(ctx, method, id, "no verified certificate")
		}
		if !slices.Contains(certNames(chains[0][0]), id) {
			return "", t.deny(ctx, method, id, "certificate does not name the node id")
		}
	}
	if method != pb.Cluster_Join_FullMethodName && t.h.AllowPeer != nil && !t.h.AllowPeer(id) {
		return "", t.deny(ctx, method, id, "not a cluster member")
	}
	return id, nil
}

// deny counts a refused call and logs it, at most once a second (a flood of
// refused calls must not become a flood of logs).
func (t *Transport) deny(ctx context.Context, method, id, why string) error {
	n := t.refused.Add(1)
	now := int64(t.now())
	last := t.refusedLogged.Load()
	if now-last >= int64(time.Second) && t.refusedLogged.CompareAndSwap(last, now) {
		addr := ""
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		t.log.Warn("call refused", "method", method, "peer", id, "addr", addr, "err", why, "refused_total", n)
	}
	return status.Error(codes.PermissionDenied, why)
}
