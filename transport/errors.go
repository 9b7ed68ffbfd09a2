package transport

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Every error this package returns or passes to a done
// callback wraps one of them (or context.Canceled / DeadlineExceeded).
var (
	ErrInvalidConfig = errors.New("transport: invalid config")
	ErrClosed        = errors.New("transport: closed")

	// Forwarding.
	ErrOutboxFull     = errors.New("transport: peer outbox full")
	ErrUnacknowledged = errors.New("transport: not acknowledged by the peer in time")
	ErrUnknownPeer    = errors.New("transport: unknown peer")
	ErrPeerRemoved    = errors.New("transport: peer removed")

	// Calls, both sides: a handler returns these (wrapped) and the caller
	// gets the same sentinel back.
	ErrNotLeader = errors.New("transport: not the leader")
	ErrRejected  = errors.New("transport: rejected by the state machine")
	ErrNotFound  = errors.New("transport: not found")
	ErrInvalid   = errors.New("transport: invalid request")

	// Calls, caller side.
	ErrTooLarge         = errors.New("transport: message larger than the limit")
	ErrPermissionDenied = errors.New("transport: permission denied")
	ErrUnavailable      = errors.New("transport: peer unavailable")
	ErrWrongPeer        = errors.New("transport: the peer at that address is another node")
	ErrRemote           = errors.New("transport: remote error")
)

// ProposeError is the error of a Propose that reached the leader and did not
// succeed. It wraps ErrNotLeader, ErrRejected, context.DeadlineExceeded,
// ErrInvalid or ErrRemote according to Code.
type ProposeError struct {
	Index   uint64 // the log index, when the command was committed (REJECTED)
	Reason  string // what the leader's Proposer said, see Reasoner
	Message string
	err     error
}

func (e *ProposeError) Error() string {
	return fmt.Sprintf("%v: %s", e.err, e.Message)
}

func (e *ProposeError) Unwrap() error { return e.err }

// Reasoner may be implemented by an error a Proposer returns: its Reason is
// carried verbatim to the caller's ProposeError.Reason (for example which
// rejection it was, so that a follower can react to it).
type Reasoner interface {
	Reason() string
}

// statusError turns a handler's error into a gRPC status error.
func statusError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

// codeOf maps this package's sentinels (and context errors) to gRPC codes.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, ErrNotLeader):
		return codes.FailedPrecondition
	case errors.Is(err, ErrRejected):
		return codes.Aborted
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, ErrTooLarge):
		return codes.ResourceExhausted
	case errors.Is(err, ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// fromStatus translates an error of a gRPC call into this package's
// sentinels; what it returns never needs the caller to know gRPC.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		// Not from gRPC: one of ours already, or a context error.
		return err
	}
	var sentinel error
	switch s.Code() {
	case codes.OK:
		return nil
	case codes.FailedPrecondition:
		sentinel = ErrNotLeader
	case codes.Aborted:
		sentinel = ErrRejected
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.InvalidArgument:
		sentinel = ErrInvalid
	case codes.ResourceExhausted:
		sentinel = ErrTooLarge
	case codes.PermissionDenied, codes.Unauthenticated:
		sentinel = ErrPermissionDenied
	case codes.Unavailable:
		sentinel = ErrUnavailable
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Canceled:
		sentinel = context.Canceled
	default:
		sentinel = ErrRemote
	}
	return fmt.Errorf("%w: %s", sentinel, s.Message())
}
