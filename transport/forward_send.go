package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// Forwarder is the forwarding half of a Transport, for code that only
// forwards (and for its fakes in tests).
type Forwarder interface {
	Send(peer string, m *pb.ForwardedMessage, done func(error))
	PeerApplied(peer string) uint64
	WaitPeerApplied(ctx context.Context, peer string, idx uint64) error
	PeerConnected(peer string) bool
}

var _ Forwarder = (*Transport)(nil)

// Send forwards m to peer (a node id set with SetPeer) and calls done once
// with the outcome:
//   - nil: the peer acknowledged that m is queued in its local sessions;
//   - ErrOutboxFull, ErrTooLarge, ErrUnknownPeer, ErrPeerRemoved, ErrClosed:
//     not sent (the first three at once, from within Send);
//   - ErrUnacknowledged: not acknowledged within Config.AckTimeout or
//     Config.MaxAttempts sends; the peer may or may not have it.
//
// Send never blocks. Messages to one peer are sent, delivered and
// acknowledged in the order of the Send calls; the done calls of those
// that succeed come in that order too, on the peer's sender goroutine, so
// done must not block (nor call Close, which waits for that goroutine).
// Send encodes m into the peer's outbox and keeps no reference to it: the
// caller may reuse m once Send returns.
func (t *Transport) Send(peer string, m *pb.ForwardedMessage, done func(error)) {
	s := (*t.peers.Load())[peer]
	if s == nil {
		t.droppedUnknown.Add(1)
		if t.isClosed() {
			done(ErrClosed)
			return
		}
		done(fmt.Errorf("%w: %q", ErrUnknownPeer, peer))
		return
	}
	s.send(m, done)
}

// SendWait is Send that, while the peer is connected and its outbox is
// full, waits up to maxWait for room instead of failing at once: the
// backpressure of a peer that is slower than the ingress reaches the
// publishers. A peer that is not connected gets Send's behaviour.
func (t *Transport) SendWait(peer string, m *pb.ForwardedMessage, done func(error), maxWait time.Duration) {
	s := (*t.peers.Load())[peer]
	if s == nil {
		t.Send(peer, m, done)
		return
	}
	size, now := recordSize(m), t.now()
	if !s.connected(now) {
		s.enqueue(m, size, done, now, false)
		return
	}
	var timeout <-chan time.Time
	for {
		space := s.enqueue(m, size, done, now, true)
		if space == nil {
			return
		}
		if timeout == nil {
			tm := time.NewTimer(maxWait)
			defer tm.Stop()
			timeout = tm.C
		}
		select {
		case <-space:
			now = t.now()
		case <-timeout:
			s.enqueue(m, size, done, t.now(), false) // fails with ErrOutboxFull unless room appeared
			return
		}
	}
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// peerSender owns the forwarding to one peer: its outbox, and the one
// goroutine (run) that opens the stream, sends, takes the acknowledgements
// and calls the done callbacks.
type peerSender struct {
	t     *Transport
	id    string
	epoch uint64

	ctx     context.Context // ends at stop
	cancel  context.CancelFunc
	stopErr atomic.Pointer[error] // what pending messages get at stop

	kick chan struct{} // cap 1: the outbox has new messages

	mu     sync.Mutex
	addr   string
	q      []entry // the outbox: q[head:], of which q[head:head+nsent] are sent on the current stream
	head   int
	nsent  int
	bytes  int
	seq    uint64        // last sequence number given
	closed error         // set when run has exited: Send answers with it
	space  chan struct{} // closed when messages leave a full outbox (SendWait)

	chunk []byte // where Send encodes records: the tail of the newest chunk

	// Owned by run.
	calls  []doneCall
	packed packedBatch      // the batch frame in the packed layout, reused
	frame  *pb.ForwardFrame // the batch frame for a receiver that takes no packed batches
	batch  *pb.ForwardBatch
	views  []Message
	hb     *pb.ForwardFrame // the heartbeat frame, reused

	stats senderStats
}

type doneCall struct {
	fn  func(error)
	err error
}

type senderStats struct {
	enqueued, sent, acked, retried, dropped atomic.Uint64
	droppedFull, droppedUnacked, opens      atomic.Uint64
	connected                               atomic.Bool
	lastHeard                               atomic.Int64 // Transport.now() of the last frame from the peer
	latency, latencyMax                     atomic.Int64 // EWMA and max of Send to acknowledgement
}

func newPeerSender(t *Transport, id, addr string, epoch uint64) *peerSender {
	s := &peerSender{t: t, id: id, epoch: epoch, addr: addr, kick: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(t.ctx)
	s.batch = &pb.ForwardBatch{}
	s.frame = &pb.ForwardFrame{Frame: &pb.ForwardFrame_Batch{Batch: s.batch}}
	s.hb = &pb.ForwardFrame{Frame: &pb.ForwardFrame_Heartbeat{Heartbeat: &pb.ForwardHeartbeat{}}}
	return s
}

func (s *peerSender) setAddr(addr string) (old string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, s.addr = s.addr, addr
	return old
}

func (s *peerSender) address() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// stop makes run exit; pending messages get err. It does not wait.
func (s *peerSender) stop(err error) {
	s.stopErr.CompareAndSwap(nil, &err)
	s.cancel()
}

// sendStream is one Forward stream of a peerSender.
type sendStream struct {
	stream  pb.Cluster_ForwardClient
	cancel  context.CancelFunc
	opened  time.Duration
	done    chan struct{} // closed when recvLoop has exited
	err     error         // why recvLoop exited; read after done
	upTo    atomic.Uint64 // highest acknowledged sequence number
	ackKick chan struct{} // cap 1: upTo grew
	stall   *time.Timer   // cancels the stream when a Send blocks too long

	lastSend    time.Duration
	sentApplied uint64
	packed      bool // the receiver takes ForwardBatch.packed
}

// closedChan is always ready: a select on it does not block.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (s *peerSender) run() {
	defer s.t.wg.Done()
	cfg := &s.t.cfg
	log := s.t.log.With("peer", s.id)
	var st *sendStream
	bo := retryBackoff{min: cfg.ReconnectMin, max: cfg.ReconnectMax}
	hb := time.NewTicker(cfg.HeartbeatInterval)
	defer hb.Stop()
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	dialDue, hbDue, warned := true, false, false

	teardown := func(err error) {
		st.cancel()
		<-st.done
		st.stall.Stop()
		s.stats.connected.Store(false)
		s.mu.Lock()
		s.nsent = 0 // resent on the next stream
		s.mu.Unlock()
		if s.ctx.Err() == nil {
			log.Warn("forward stream closed", "err", err)
			warned = true
		}
		if s.t.now()-st.opened > cfg.ReconnectMax {
			bo.reset() // it was healthy for a while: not a flapping peer
		}
		st = nil
		retry.Reset(bo.next())
	}
	defer func() {
		if st != nil {
			st.cancel()
			<-st.done
			st.stall.Stop()
			s.stats.connected.Store(false)
		}
		s.drain()
	}()

	for {
		appliedCh := s.t.localN.wait() // before reading local: no wakeup is missed
		if st != nil {
			s.acknowledge(st.upTo.Load())
		}
		s.expire()
		if st == nil && dialDue {
			dialDue = false
			var err error
			if st, err = s.open(); err != nil {
				if s.ctx.Err() != nil {
					return
				}
				if !warned {
					log.Warn("forward stream not opened", "err", err)
					warned = true
				}
				retry.Reset(bo.next())
			} else {
				if warned {
					log.Info("forward stream open")
				}
				warned = false
			}
		}
		more := false
		if st != nil {
			var err error
			if more, err = s.flush(st); err != nil {
				teardown(err)
			}
		}
		if st != nil && !more {
			now := s.t.now()
			applied := s.t.local.Load()
			if applied != st.sentApplied || hbDue && now-st.lastSend >= cfg.HeartbeatInterval/2 {
				s.hb.GetHeartbeat().AppliedIndex = applied
				// Even a heartbeat blocks when the peer reads nothing.
				stall := min(cfg.PeerTimeout, cfg.AckTimeout)
				if d, ok := s.headDeadline(); ok {
					stall = min(stall, d-now)
				}
				st.stall.Reset(max(stall, time.Millisecond))
				err := st.stream.Send(s.hb)
				st.stall.Stop()
				if err != nil {
					teardown(err)
				} else {
					st.lastSend, st.sentApplied = now, applied
				}
			}
		}
		hbDue = false
		if d, ok := s.headDeadline(); ok {
			expiry.Reset(max(d-s.t.now(), time.Millisecond))
		} else {
			expiry.Stop()
		}

		var stDone, stAck <-chan struct{}
		if st != nil {
			stDone, stAck = st.done, st.ackKick
		}
		var ready <-chan struct{}
		if more {
			ready = closedChan
		}
		select {
		case <-s.ctx.Done():
			return
		case <-ready:
		case <-s.kick:
		case <-stAck:
		case <-stDone:
			teardown(st.err)
		case <-expiry.C:
		case <-retry.C:
			dialDue = true
		case <-appliedCh:
		case <-hb.C:
			hbDue = true
			if st != nil && s.t.now()-time.Duration(s.stats.lastHeard.Load()) > cfg.PeerTimeout {
				teardown(fmt.Errorf("%w: nothing heard for %v", ErrUnavailable, cfg.PeerTimeout))
			}
		}
	}
}

// open opens a stream, says hello, and takes the receiver's answer: what it
// already has is acknowledged, everything else is resent from the start.
func (s *peerSender) open() (*sendStream, error) {
	t := s.t
	conn, err := t.conn(s.address(), s.id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	// The handshake is bounded by DialTimeout, and by the head's deadline:
	// the head must get its ErrUnacknowledged on time. A message sent
	// meanwhile expires AckTimeout after it came, so AckTimeout bounds it
	// too.
	limit := min(t.cfg.DialTimeout, t.cfg.AckTimeout)
	if d, ok := s.headDeadline(); ok {
		limit = min(limit, max(d-t.now(), time.Millisecond))
	}
	timer := time.AfterFunc(limit, cancel)
	stream, err := pb.NewClusterClient(conn).Forward(ctx)
	var ack *pb.ForwardAck
	applied := t.local.Load()
	if err == nil {
		err = stream.Send(&pb.ForwardFrame{Frame: &pb.ForwardFrame_Hello{Hello: &pb.ForwardHello{
			Epoch: s.epoch, AppliedIndex: applied,
		}}})
		if err == nil {
			ack, err = stream.Recv()
		}
	}
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err == nil && ack.NodeId != "" && ack.NodeId != s.id {
		err = fmt.Errorf("%w: %q answered", ErrWrongPeer, ack.NodeId)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	now := t.now()
	st := &sendStream{
		stream:      stream,
		cancel:      cancel,
		opened:      now,
		done:        make(chan struct{}),
		ackKick:     make(chan struct{}, 1),
		stall:       time.AfterFunc(time.Hour, cancel),
		lastSend:    now,
		sentApplied: applied,
		packed:      ack.Packed,
	}
	st.stall.Stop()
	st.upTo.Store(ack.UpToSeq)
	s.stats.lastHeard.Store(int64(now))
	t.applied.update(s.id, ack.AppliedIndex)
	s.stats.connected.Store(true)
	s.stats.opens.Add(1)

	// A new stream: nothing is in flight on it.
	s.mu.Lock()
	s.nsent = 0
	s.mu.Unlock()
	s.acknowledge(ack.UpToSeq)
	s.expire()

	t.wg.Add(1)
	go s.recvLoop(st)
	return st, nil
}

// recvLoop reads the receiver's acknowledgements and heartbeats; run owns it
// (it cancels the stream and waits for done).
func (s *peerSender) recvLoop(st *sendStream) {
	defer s.t.wg.Done()
	defer close(st.done)
	defer func() {
		if r := recover(); r != nil {
			s.t.log.Error("forward receive panic", "peer", s.id, "panic", r)
			st.err = fmt.Errorf("%w: panic", ErrRemote)
		}
	}()
	for {
		ack, err := st.stream.Recv()
		if err != nil {
			st.err = err
			return
		}
		s.stats.lastHeard.Store(int64(s.t.now()))
		s.t.applied.update(s.id, ack.AppliedIndex)
		if ack.UpToSeq > st.upTo.Load() {
			st.upTo.Store(ack.UpToSeq)
			select {
			case st.ackKick <- struct{}{}:
			default:
			}
		}
	}
}

// flush sends the next batch of unsent messages, if any, and reports
// whether more are waiting. One batch per call, so that run takes the
// acknowledgements in between.
func (s *peerSender) flush(st *sendStream) (more bool, err error) {
	cfg := &s.t.cfg
	s.mu.Lock()
	start := s.head + s.nsent
	n, bytes, retried := 0, batchOverhead, uint64(0)
	recs := s.packed.recs[:0]
	for i := start; i < len(s.q) && n < cfg.MaxBatchMessages; i++ {
		e := &s.q[i]
		sz := len(e.rec)
		if n > 0 && bytes+sz > cfg.MaxBatchBytes {
			break
		}
		bytes += sz
		n++
		if e.attempts > 0 {
			retried++
		}
		e.attempts++
		recs = append(recs, e.rec)
	}
	if n == 0 {
		s.mu.Unlock()
		return false, nil
	}
	seqFirst := s.q[start].seq
	s.nsent += n
	more = start+n < len(s.q)
	deadline := s.q[s.head].enq + cfg.AckTimeout
	s.mu.Unlock()

	applied := s.t.local.Load()
	var frame any
	if st.packed {
		s.packed.seqFirst, s.packed.applied, s.packed.recs = seqFirst, applied, recs
		frame = &s.packed
	} else {
		s.batch.SeqFirst, s.batch.AppliedIndex, s.batch.Messages = seqFirst, applied, s.batch.Messages[:0]
		for _, r := range recs {
			var err error
			if s.views, err = decodePacked(r, s.views[:0]); err != nil || len(s.views) != 1 {
				// Not possible: appendRecord wrote it. Sent again on the
				// next stream, until MaxAttempts gives it up.
				clear(recs)
				s.packed.recs = recs[:0]
				return false, fmt.Errorf("%w: outbox record: %v", ErrInvalid, err)
			}
			s.batch.Messages = append(s.batch.Messages, s.views[0].Proto())
		}
		clear(s.views)
		frame = s.frame
	}
	// Send blocks while the peer's flow-control window is full; past the
	// head's deadline the stream is cancelled, which unblocks it.
	st.stall.Reset(max(deadline-s.t.now(), time.Millisecond))
	err = st.stream.SendMsg(frame)
	st.stall.Stop()
	clear(recs)
	s.packed.recs = recs[:0]
	clear(s.batch.Messages)
	s.batch.Messages = s.batch.Messages[:0]
	s.stats.sent.Add(uint64(n))
	s.stats.retried.Add(retried)
	if err != nil {
		return false, err
	}
	st.lastSend, st.sentApplied = s.t.now(), applied
	return more, nil
}
