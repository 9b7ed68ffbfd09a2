package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// receiverTable holds, per sending node, the dedup state of its newest
// forwarding epoch. It keeps an entry per node that ever forwarded to this
// one (a few dozen bytes each).
type receiverTable struct {
	mu sync.Mutex
	m  map[string]*senderState
}

// senderState is the dedup state of one sending node. token (capacity 1)
// is held while a stream of that node says hello or delivers, so the
// streams of one sender (an old one not yet torn down, and its successor)
// deliver one at a time, each message once.
type senderState struct {
	token     chan struct{}
	epoch     uint64 // under token
	delivered uint64 // highest sequence number delivered in epoch; under token
}

func (r *receiverTable) init() { r.m = map[string]*senderState{} }

func (r *receiverTable) get(from string) *senderState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.m[from]
	if st == nil {
		st = &senderState{token: make(chan struct{}, 1)}
		r.m[from] = st
	}
	return st
}

func (st *senderState) acquire(ctx context.Context) error {
	select {
	case st.token <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (st *senderState) release() { <-st.token }

// Forward is the receiving end of a peer's forwarding stream. The handler
// goroutine writes (acknowledgements and heartbeats); a reader goroutine
// reads and delivers.
func (s *server) Forward(stream pb.Cluster_ForwardServer) error {
	t := s.t
	if t.h.Deliverer == nil {
		return status.Error(codes.Unimplemented, "this node takes no forwarded messages")
	}
	ctx := stream.Context()
	from := CallerID(ctx)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.Epoch == 0 {
		return status.Error(codes.InvalidArgument, "the first frame must be a hello with an epoch")
	}
	st := t.recv.get(from)
	if err := st.acquire(ctx); err != nil {
		return err
	}
	switch {
	case hello.Epoch < st.epoch:
		st.release()
		return status.Errorf(codes.FailedPrecondition, "epoch %d is older than %d", hello.Epoch, st.epoch)
	case hello.Epoch > st.epoch:
		st.epoch, st.delivered = hello.Epoch, 0
	}
	upTo := st.delivered
	st.release()
	t.applied.update(from, hello.AppliedIndex)
	applied := t.local.Load()
	if err := stream.Send(&pb.ForwardAck{UpToSeq: upTo, AppliedIndex: applied, NodeId: t.cfg.NodeID, Packed: !t.unpacked.Load()}); err != nil {
		return err
	}

	r := &streamReader{t: t, from: from, epoch: hello.Epoch, st: st, kick: make(chan struct{}, 1), done: make(chan error, 1)}
	r.upTo.Store(upTo)
	t.wg.Add(1)
	go r.run(ctx, stream)

	hb := time.NewTicker(t.cfg.HeartbeatInterval)
	defer hb.Stop()
	ack := &pb.ForwardAck{}
	lastSend := t.now()
	hbDue := false
	for {
		appliedCh := t.localN.wait()
		now := t.now()
		up, app := r.upTo.Load(), t.local.Load()
		if up != upTo || app != applied || hbDue && now-lastSend >= t.cfg.HeartbeatInterval/2 {
			ack.UpToSeq, ack.AppliedIndex = up, app
			if err := stream.Send(ack); err != nil {
				return err
			}
			upTo, applied, lastSend = up, app, now
		}
		hbDue = false
		select {
		case err := <-r.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-r.kick:
		case <-appliedCh:
		case <-hb.C:
			hbDue = true
		}
	}
}

// streamReader reads one Forward stream and delivers its batches. The
// Transport owns it (its WaitGroup); it exits when the stream ends, which
// the handler's return brings about.
type streamReader struct {
	t     *Transport
	from  string
	epoch uint64
	st    *senderState
	upTo  atomic.Uint64 // highest sequence number delivered on this stream
	kick  chan struct{} // cap 1: upTo grew
	done  chan error    // cap 1: why the reader stopped (nil: the sender closed)

	views  []Message // the messages of the batch being delivered, reused
	legacy []byte    // a batch of protobuf messages in the packed layout, reused
}

func (r *streamReader) run(ctx context.Context, stream pb.Cluster_ForwardServer) {
	defer r.t.wg.Done()
	var err error
	defer func() {
		if p := recover(); p != nil {
			r.t.log.Error("forward delivery panic", "peer", r.from, "panic", p)
			err = status.Error(codes.Internal, "internal error")
		}
		r.done <- err
	}()
	err = r.loop(ctx, stream)
}

// recvAhead is how many frames the reader decodes ahead of delivery: the
// next batch is unmarshalled while the previous one is being delivered.
const recvAhead = 4

func (r *streamReader) loop(ctx context.Context, stream pb.Cluster_ForwardServer) error {
	type recvd struct {
		f   *recvFrame
		err error
	}
	frames := make(chan recvd, recvAhead)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			f := &recvFrame{}
			err := stream.RecvMsg(f)
			select {
			case frames <- recvd{f, err}:
			case <-stop:
				f.free()
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var rf recvd
		select {
		case rf = <-frames:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := rf.err
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch fr := rf.f.frame.Frame.(type) {
		case *pb.ForwardFrame_Batch:
			err := r.deliver(ctx, fr.Batch)
			rf.f.free() // the messages were views of its buffer
			if err != nil {
				return err
			}
		case *pb.ForwardFrame_Heartbeat:
			r.t.applied.update(r.from, fr.Heartbeat.GetAppliedIndex())
		case *pb.ForwardFrame_Hello:
			return status.Error(codes.InvalidArgument, "a second hello")
		default:
			// A frame of a newer version, or none: nothing to do.
		}
	}
}

// deliver hands the messages of b that lie beyond what was delivered of
// this sender's epoch to the Deliverer, then acknowledges.
func (r *streamReader) deliver(ctx context.Context, b *pb.ForwardBatch) error {
	t := r.t
	t.applied.update(r.from, b.AppliedIndex)
	msgs, err := r.decode(b)
	defer func() {
		clear(r.views) // the views keep the frame's buffer
		r.views = r.views[:0]
	}()
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	if b.SeqFirst == 0 || b.SeqFirst > math.MaxUint64-uint64(len(msgs)) {
		return status.Errorf(codes.InvalidArgument, "bad seq_first %d", b.SeqFirst)
	}
	last := b.SeqFirst + uint64(len(msgs)) - 1
	if err := r.st.acquire(ctx); err != nil {
		return err
	}
	defer r.st.release()
	if r.st.epoch != r.epoch {
		// A newer stream of the sender said hello: this one is stale.
		return status.Error(codes.Aborted, "superseded by a newer epoch")
	}
	if last <= r.st.delivered {
		t.duplicates.Add(uint64(len(msgs)))
		r.ack(r.st.delivered)
		return nil
	}
	if r.st.delivered >= b.SeqFirst {
		skip := r.st.delivered - b.SeqFirst + 1
		t.duplicates.Add(skip)
		msgs = msgs[skip:]
	}
	if err := t.h.Deliverer.DeliverForwarded(ctx, r.from, msgs); err != nil {
		t.deliverErrors.Add(1)
		t.log.Warn("forwarded batch not delivered", "peer", r.from, "err", err)
		return status.Error(codes.Unavailable, fmt.Sprintf("not delivered: %v", err))
	}
	r.st.delivered = last
	t.received.Add(uint64(len(msgs)))
	r.ack(last)
	return nil
}

// decode returns the messages of b as views, from its packed messages or,
// from a sender that sends protobuf messages, from those.
func (r *streamReader) decode(b *pb.ForwardBatch) ([]Message, error) {
	switch {
	case len(b.Packed) > 0 && len(b.Messages) > 0:
		return nil, errors.New("a batch with both packed and protobuf messages")
	case len(b.Messages) > 0:
		r.t.legacyBatches.Add(1)
		r.legacy = r.legacy[:0]
		for _, m := range b.Messages {
			r.legacy = appendRecord(r.legacy, m)
		}
		msgs, err := decodePacked(r.legacy, r.views[:0])
		r.views = msgs
		return msgs, err
	}
	msgs, err := decodePacked(b.Packed, r.views[:0])
	r.views = msgs
	return msgs, err
}

func (r *streamReader) ack(upTo uint64) {
	if upTo > r.upTo.Load() {
		r.upTo.Store(upTo)
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}
