package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// checkDelivered fails unless got holds the msg ids 1..n, once each, in order.
func checkDelivered(got []*pb.ForwardedMessage, n int) error {
	if len(got) != n {
		return fmt.Errorf("delivered %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.MsgId != uint64(i+1) {
			return fmt.Errorf("delivered #%d is msg %d, want %d (order or duplicate)", i, m.MsgId, i+1)
		}
	}
	return nil
}

func TestForwardOrderAndExactlyOnceAcrossBreaks(t *testing.T) {
	a := startNode(t, testConfig("a"), Handlers{})
	b := startNode(t, testConfig("b"), Handlers{})
	// Call 3: the batch is delivered, then the connection breaks before the
	// acknowledgement goes out: it must not be delivered again. Call 6: the
	// connection breaks and the batch is refused: it must be resent.
	var brokeAfter, brokeBefore atomic.Bool
	b.fd.setHook(func(_ context.Context, call int, _ []*pb.ForwardedMessage) (bool, error) {
		switch call {
		case 3:
			b.ln.breakAll()
			brokeAfter.Store(true)
			return true, nil
		case 6:
			b.ln.breakAll()
			brokeBefore.Store(true)
			return false, errors.New("shutting down")
		}
		return true, nil
	})
	if err := a.SetPeer("b", b.addr); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	o := newOutcomes()
	for i := 1; i <= n; i++ {
		a.Send("b", msg(uint64(i), 64), o.done(uint64(i)))
		if i%100 == 0 {
			// Let batches form and flow, so the breaks land mid-stream.
			eventually(t, 10*time.Second, func() error {
				if o.count() < i-300 {
					return fmt.Errorf("%d of %d done", o.count(), i)
				}
				return nil
			})
		}
	}
	eventually(t, 20*time.Second, func() error {
		if c := o.count(); c != n {
			return fmt.Errorf("%d of %d done", c, n)
		}
		return nil
	})
	for i, id := range o.order {
		if id != uint64(i+1) {
			t.Fatalf("done #%d is for msg %d: out of order", i, id)
		}
		if err := o.errs[id]; err != nil {
			t.Fatalf("msg %d: %v", id, err)
		}
	}
	if err := checkDelivered(b.fd.from("a"), n); err != nil {
		t.Fatal(err)
	}
	if !brokeAfter.Load() || !brokeBefore.Load() {
		t.Fatal("the connection was not broken twice: the test checks nothing")
	}
	st := a.Stats().Peers[0]
	if st.Acked != n || st.Dropped != 0 || st.Reconnects < 2 || st.Retried == 0 {
		t.Fatalf("stats %+v: want %d acked, none dropped, >= 2 reconnects, some resent", st, n)
	}
	if got := b.Stats().DeliverErrors; got != 1 {
		t.Fatalf("receiver counted %d deliver errors, want 1", got)
	}
}

// rawForward opens a Forward stream to addr as node id, by hand.
func rawForward(t *testing.T, addr, id string) (pb.Cluster_ForwardClient, context.CancelFunc) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	ctx = metadata.AppendToOutgoingContext(ctx, mdNodeID, id)
	s, err := pb.NewClusterClient(cc).Forward(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return s, cancel
}

func batchFrame(seqFirst uint64, ids ...uint64) *pb.ForwardFrame {
	b := &pb.ForwardBatch{SeqFirst: seqFirst}
	for _, id := range ids {
		b.Messages = append(b.Messages, msg(id, 8))
	}
	return &pb.ForwardFrame{Frame: &pb.ForwardFrame_Batch{Batch: b}}
}

func helloFrame(epoch uint64) *pb.ForwardFrame {
	return &pb.ForwardFrame{Frame: &pb.ForwardFrame_Hello{Hello: &pb.ForwardHello{Epoch: epoch}}}
}

// recvAck reads acknowledgements until one reaches upTo.
func recvAck(t *testing.T, s pb.Cluster_ForwardClient, upTo uint64) {
	t.Helper()
	for {
		ack, err := s.Recv()
		if err != nil {
			t.Fatalf("waiting for ack %d: %v", upTo, err)
		}
		if ack.UpToSeq > upTo {
			t.Fatalf("ack %d, want %d", ack.UpToSeq, upTo)
		}
		if ack.UpToSeq == upTo {
			return
		}
	}
}

// TestReceiverDedup drives the receiving end by hand: overlapping batches,
// a resend on a new stream, an older epoch, a newer epoch, bad input.
func TestReceiverDedup(t *testing.T) {
	b := startNode(t, testConfig("b"), Handlers{})

	s, cancel := rawForward(t, b.addr, "a")
	if err := s.Send(helloFrame(100)); err != nil {
		t.Fatal(err)
	}
	ack, err := s.Recv()
	if err != nil || ack.UpToSeq != 0 || ack.NodeId != "b" {
		t.Fatalf("hello answer %v, %v; want up_to 0 from b", ack, err)
	}
	s.Send(batchFrame(1, 1, 2, 3))
	recvAck(t, s, 3)
	s.Send(batchFrame(2, 2, 3, 4, 5)) // overlaps
	recvAck(t, s, 5)
	cancel()

	// The same epoch on a new stream: the answer says what is there; a
	// resend of all of it is acknowledged and not delivered.
	s, cancel = rawForward(t, b.addr, "a")
	defer cancel()
	s.Send(helloFrame(100))
	if ack, err := s.Recv(); err != nil || ack.UpToSeq != 5 {
		t.Fatalf("hello answer %v, %v; want up_to 5", ack, err)
	}
	s.Send(batchFrame(1, 1, 2, 3, 4, 5))
	s.Send(batchFrame(6, 6))
	recvAck(t, s, 6)
	if err := checkDelivered(b.fd.from("a"), 6); err != nil {
		t.Fatal(err)
	}
	if d := b.Stats().Duplicates; d != 7 {
		t.Fatalf("%d duplicates counted, want 7", d)
	}

	// An older epoch is refused.
	old, cancelOld := rawForward(t, b.addr, "a")
	defer cancelOld()
	old.Send(helloFrame(99))
	if _, err := old.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("older epoch: %v, want FailedPrecondition", err)
	}

	// A newer epoch starts over (the sender restarted); the stream of the
	// old epoch is stale from then on.
	s2, cancel2 := rawForward(t, b.addr, "a")
	defer cancel2()
	s2.Send(helloFrame(200))
	if ack, err := s2.Recv(); err != nil || ack.UpToSeq != 0 {
		t.Fatalf("new epoch answer %v, %v; want up_to 0", ack, err)
	}
	s2.Send(batchFrame(1, 7))
	recvAck(t, s2, 1)
	s.Send(batchFrame(7, 8))
	for {
		if _, err := s.Recv(); err != nil {
			if status.Code(err) != codes.Aborted {
				t.Fatalf("stale stream: %v, want Aborted", err)
			}
			break
		}
	}
	if err := checkDelivered(b.fd.from("a"), 7); err != nil {
		t.Fatal(err)
	}

	// Bad input ends that stream only.
	for _, f := range []*pb.ForwardFrame{
		batchFrame(0, 9),              // sequence numbers start at 1
		batchFrame(^uint64(0), 9, 10), // overflows
		helloFrame(300),               // a second hello
		{Frame: &pb.ForwardFrame_Batch{Batch: &pb.ForwardBatch{}}},             // empty batch: fine, ignored
		{Frame: &pb.ForwardFrame_Heartbeat{Heartbeat: &pb.ForwardHeartbeat{}}}, // heartbeat without content
	} {
		bad, cancelBad := rawForward(t, b.addr, "a")
		bad.Send(helloFrame(200))
		if _, err := bad.Recv(); err != nil {
			t.Fatal(err)
		}
		bad.Send(f)
		bad.CloseSend()
		for {
			_, err := bad.Recv()
			if err == nil {
				continue
			}
			empty := f.GetBatch() != nil && len(f.GetBatch().Messages) == 0 || f.GetHeartbeat() != nil
			if empty && !errors.Is(err, io.EOF) {
				t.Fatalf("frame %v: %v, want a clean end", f, err)
			}
			if !empty && status.Code(err) != codes.InvalidArgument {
				t.Fatalf("frame %v: %v, want InvalidArgument", f, err)
			}
			break
		}
		cancelBad()
	}
	// The first frame must be a hello.
	nohello, cancelNo := rawForward(t, b.addr, "a")
	defer cancelNo()
	nohello.Send(batchFrame(1, 1))
	if _, err := nohello.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no hello: %v, want InvalidArgument", err)
	}
	if err := checkDelivered(b.fd.from("a"), 7); err != nil {
		t.Fatal(err)
	}
}

func TestOutboxFull(t *testing.T) {
	release := make(chan struct{})
	b := startNode(t, testConfig("b"), Handlers{})
	b.fd.setHook(func(ctx context.Context, _ int, _ []*pb.ForwardedMessage) (bool, error) {
		select {
		case <-release:
			return true, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	})
	cfg := testConfig("a")
	cfg.OutboxMessages = 10
	cfg.OutboxBytes = 4 << 10
	a := startNode(t, cfg, Handlers{})
	a.SetPeer("b", b.addr)

	o := newOutcomes()
	for i := uint64(1); i <= 10; i++ {
		a.Send("b", msg(i, 16), o.done(i))
	}
	if c := o.count(); c != 0 {
		t.Fatalf("%d done before any acknowledgement", c)
	}
	// By count: the 11th is refused at once, from within Send.
	a.Send("b", msg(11, 16), o.done(11))
	if err, ok := o.get(11); !ok || !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("11th: %v (done called: %v), want ErrOutboxFull at once", err, ok)
	}
	st := a.Stats().Peers[0]
	if st.DroppedFull != 1 || st.Dropped != 1 || st.OutboxDepth != 10 {
		t.Fatalf("stats %+v: want 1 dropped as full, depth 10", st)
	}
	close(release)
	eventually(t, 10*time.Second, func() error {
		if c := o.count(); c != 11 {
			return fmt.Errorf("%d of 11 done", c)
		}
		return nil
	})
	for i := uint64(1); i <= 10; i++ {
		if err, _ := o.get(i); err != nil {
			t.Fatalf("msg %d: %v", i, err)
		}
	}
	if st := a.Stats().Peers[0]; st.Acked != 10 || st.Dropped != 1 || st.OutboxDepth != 0 {
		t.Fatalf("stats %+v: want 10 acked, 1 dropped, empty outbox", st)
	}
}

func TestOutboxFullByBytes(t *testing.T) {
	cfg := testConfig("a")
	cfg.OutboxBytes = 1 << 10
	a := startNode(t, cfg, Handlers{})
	a.SetPeer("b", freeAddr(t)) // never acknowledges
	o := newOutcomes()
	a.Send("b", msg(1, 600), o.done(1))
	a.Send("b", msg(2, 600), o.done(2))
	if err, ok := o.get(2); !ok || !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("second: %v (done: %v), want ErrOutboxFull at once", err, ok)
	}
	if _, ok := o.get(1); ok {
		t.Fatal("first done already")
	}
}

func TestUnacknowledgedWithinBound(t *testing.T) {
	silent := blackHole(t) // accepts TCP, never speaks HTTP/2
	for _, tc := range []struct {
		name, addr string
		ln         *trackingListener
	}{
		{"refused", freeAddr(t), nil},
		{"black hole", silent.Addr().String(), silent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("a")
			cfg.AckTimeout = 300 * time.Millisecond
			cfg.DialTimeout = 5 * time.Second // longer than AckTimeout: the bound must still hold
			a := startNode(t, cfg, Handlers{})
			a.SetPeer("b", tc.addr)
			if tc.ln != nil {
				// The sender is in its handshake before the messages come:
				// their bound must hold all the same.
				eventually(t, 5*time.Second, func() error {
					tc.ln.mu.Lock()
					defer tc.ln.mu.Unlock()
					if len(tc.ln.conns) == 0 {
						return errors.New("no connection yet")
					}
					return nil
				})
			}
			o := newOutcomes()
			start := time.Now()
			for i := uint64(1); i <= 3; i++ {
				a.Send("b", msg(i, 8), o.done(i))
			}
			eventually(t, 5*time.Second, func() error {
				if c := o.count(); c != 3 {
					return fmt.Errorf("%d of 3 done", c)
				}
				return nil
			})
			for i := uint64(1); i <= 3; i++ {
				err, _ := o.get(i)
				if !errors.Is(err, ErrUnacknowledged) {
					t.Fatalf("msg %d: %v, want ErrUnacknowledged", i, err)
				}
				took := o.when(i).Sub(start)
				if took < cfg.AckTimeout || took > cfg.AckTimeout+700*time.Millisecond {
					t.Fatalf("msg %d gave up after %v, bound %v", i, took, cfg.AckTimeout)
				}
			}
			st := a.Stats().Peers[0]
			if st.DroppedUnacked != 3 || st.Dropped != 3 || st.OutboxDepth != 0 {
				t.Fatalf("stats %+v: want 3 dropped as unacknowledged, empty outbox", st)
			}
		})
	}
}

// blackHole accepts connections and never answers.
func blackHole(t *testing.T) *trackingListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &trackingListener{Listener: l}
	go func() {
		for {
			if _, err := ln.Accept(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { ln.Close(); ln.breakAll() })
	return ln
}

func TestMaxAttempts(t *testing.T) {
	b := startNode(t, testConfig("b"), Handlers{})
	var calls atomic.Int32
	b.fd.setHook(func(context.Context, int, []*pb.ForwardedMessage) (bool, error) {
		calls.Add(1)
		return false, errors.New("always failing")
	})
	cfg := testConfig("a")
	cfg.MaxAttempts = 3
	cfg.AckTimeout = time.Minute
	a := startNode(t, cfg, Handlers{})
	a.SetPeer("b", b.addr)
	o := newOutcomes()
	a.Send("b", msg(1, 8), o.done(1))
	eventually(t, 10*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(1); !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("%v, want ErrUnacknowledged", err)
	}
	if c := calls.Load(); c != 3 {
		t.Fatalf("delivered %d times, want 3 attempts", c)
	}
	if st := a.Stats().Peers[0]; st.Sent != 3 || st.Retried != 2 || st.DroppedUnacked != 1 {
		t.Fatalf("stats %+v: want 3 sent, 2 retried, 1 dropped", st)
	}
}

func TestSendErrors(t *testing.T) {
	cfg := testConfig("a")
	cfg.MaxMsgSize = 64 << 10
	cfg.MaxBatchBytes = 32 << 10
	a := startNode(t, cfg, Handlers{})
	b := startNode(t, testConfig("b"), Handlers{})
	a.SetPeer("b", b.addr)
	o := newOutcomes()

	a.Send("nobody", msg(1, 8), o.done(1))
	if err, ok := o.get(1); !ok || !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	// Larger than MaxMsgSize: refused at once, counted.
	a.Send("b", msg(2, 64<<10), o.done(2))
	if err, ok := o.get(2); !ok || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	// Larger than MaxBatchBytes but within MaxMsgSize: a batch of its own.
	a.Send("b", msg(3, 40<<10), o.done(3))
	a.Send("b", msg(4, 8), o.done(4))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 4 {
			return errors.New("not done")
		}
		return nil
	})
	for _, id := range []uint64{3, 4} {
		if err, _ := o.get(id); err != nil {
			t.Fatalf("msg %d: %v", id, err)
		}
	}
	if st := a.Stats(); st.DroppedUnknownPeer != 1 || st.Peers[0].Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}

	// RemovePeer: pending messages get ErrPeerRemoved; later sends
	// ErrUnknownPeer.
	a.SetPeer("c", freeAddr(t))
	a.Send("c", msg(5, 8), o.done(5))
	a.RemovePeer("c")
	eventually(t, 5*time.Second, func() error {
		if _, ok := o.get(5); !ok {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(5); !errors.Is(err, ErrPeerRemoved) {
		t.Fatalf("removed peer: %v", err)
	}
	a.Send("c", msg(6, 8), o.done(6))
	if err, _ := o.get(6); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("after removal: %v", err)
	}

	// Close: pending get ErrClosed, later sends ErrClosed.
	a.SetPeer("d", freeAddr(t))
	a.Send("d", msg(7, 8), o.done(7))
	a.Close()
	if err, ok := o.get(7); !ok || !errors.Is(err, ErrClosed) {
		t.Fatalf("pending at close: %v (done: %v)", err, ok)
	}
	a.Send("d", msg(8, 8), o.done(8))
	if err, _ := o.get(8); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestPeerMoves(t *testing.T) {
	a := startNode(t, testConfig("a"), Handlers{})
	b1 := startNode(t, testConfig("b"), Handlers{})
	a.SetPeer("b", b1.addr)
	o := newOutcomes()
	a.Send("b", msg(1, 8), o.done(1))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	b2 := startNode(t, testConfig("b"), Handlers{}) // b, restarted elsewhere
	a.SetPeer("b", b2.addr)
	a.Send("b", msg(2, 8), o.done(2))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 2 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(2); err != nil {
		t.Fatal(err)
	}
	if got := b2.fd.from("a"); len(got) != 1 || got[0].MsgId != 2 {
		t.Fatalf("b2 got %v", got)
	}

	// An address where another node answers: the stream is refused after
	// the hello (which c sees: it learns a's applied index from it).
	c := startNode(t, testConfig("c"), Handlers{})
	a.SetAppliedIndex(7)
	a.SetPeer("b", c.addr)
	a.Send("b", msg(3, 8), o.done(3))
	eventually(t, 5*time.Second, func() error {
		if got := c.PeerApplied("a"); got != 7 {
			return fmt.Errorf("c has applied index %d of a", got)
		}
		return nil
	})
	if st := a.Stats().Peers[0]; st.Connected {
		t.Fatalf("stats %+v: connected to the wrong node", st)
	}
	if got := c.fd.from("a"); len(got) != 0 {
		t.Fatalf("c got %v, meant for b", got)
	}
	if _, ok := o.get(3); ok {
		t.Fatal("msg 3 done")
	}
}

// TestStuckReceiver: a receiver that takes a batch and never returns from
// its Deliverer stops reading, so the sender's Send blocks once the
// flow-control window is full; the messages still get ErrUnacknowledged on
// time.
func TestStuckReceiver(t *testing.T) {
	b := startNode(t, testConfig("b"), Handlers{})
	b.fd.setHook(func(ctx context.Context, _ int, _ []*pb.ForwardedMessage) (bool, error) {
		<-ctx.Done()
		return false, ctx.Err()
	})
	cfg := testConfig("a")
	cfg.AckTimeout = 500 * time.Millisecond
	a := startNode(t, cfg, Handlers{})
	a.SetPeer("b", b.addr)
	eventually(t, 5*time.Second, func() error {
		if !a.PeerConnected("b") {
			return errors.New("not connected")
		}
		return nil
	})
	const n = 4000 // 4 MB: more than the windows hold
	o := newOutcomes()
	start := time.Now()
	for i := uint64(1); i <= n; i++ {
		a.Send("b", msg(i, 1000), o.done(i))
	}
	eventually(t, 10*time.Second, func() error {
		if c := o.count(); c != n {
			return fmt.Errorf("%d of %d done", c, n)
		}
		return nil
	})
	var last time.Time
	for i := uint64(1); i <= n; i++ {
		if err, _ := o.get(i); !errors.Is(err, ErrUnacknowledged) {
			t.Fatalf("msg %d: %v", i, err)
		}
		if w := o.when(i); w.After(last) {
			last = w
		}
	}
	if took := last.Sub(start); took > cfg.AckTimeout+time.Second {
		t.Fatalf("the last gave up after %v, bound %v", took, cfg.AckTimeout)
	}
}
