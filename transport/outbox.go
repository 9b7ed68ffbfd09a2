package transport

import (
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// The outbox of a peerSender: q[head:] in sequence order, bounded by count
// and bytes. Send appends (under mu); run takes acknowledged and expired
// messages off the head and calls their done callbacks outside the lock.

// entry is one message in a peer's outbox.
type entry struct {
	msg      *pb.ForwardedMessage
	done     func(error)
	seq      uint64
	enq      time.Duration // Transport.now() at Send
	size     int32         // proto.Size(msg)
	attempts int32         // sends so far
}

func (s *peerSender) send(m *pb.ForwardedMessage, done func(error)) {
	s.sendSized(m, proto.Size(m), done)
}

// sendSized is send for a message whose proto.Size is known.
func (s *peerSender) sendSized(m *pb.ForwardedMessage, size int, done func(error)) {
	if size+msgOverhead+batchOverhead > s.t.cfg.MaxMsgSize {
		s.stats.dropped.Add(1)
		done(fmt.Errorf("%w: %d bytes to forward, limit %d", ErrTooLarge, size, s.t.cfg.MaxMsgSize))
		return
	}
	now := s.t.now()
	s.mu.Lock()
	if err := s.closed; err != nil {
		s.mu.Unlock()
		s.stats.dropped.Add(1)
		done(err)
		return
	}
	if len(s.q)-s.head >= s.t.cfg.OutboxMessages || s.bytes+size > s.t.cfg.OutboxBytes {
		s.mu.Unlock()
		s.stats.droppedFull.Add(1)
		s.stats.dropped.Add(1)
		done(ErrOutboxFull)
		return
	}
	s.seq++
	s.q = append(s.q, entry{msg: m, done: done, seq: s.seq, enq: now, size: int32(size)})
	s.bytes += size
	s.mu.Unlock()
	s.stats.enqueued.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// acknowledge completes the messages up to upTo, in order.
func (s *peerSender) acknowledge(upTo uint64) {
	now := s.t.now()
	s.mu.Lock()
	n := 0
	for s.head < len(s.q) && s.q[s.head].seq <= upTo {
		e := s.pop()
		s.calls = append(s.calls, doneCall{e.done, nil})
		s.observeLatency(now - e.enq)
		n++
	}
	s.nsent = max(s.nsent-n, 0)
	s.mu.Unlock()
	s.stats.acked.Add(uint64(n))
	s.callDone()
}

// expire gives up the messages at the head that are past their deadline,
// or, on a stream where they are not in flight, were sent MaxAttempts
// times. Both make a prefix of the outbox: older messages have the earlier
// deadline, and were sent at least as often.
func (s *peerSender) expire() {
	cfg := &s.t.cfg
	now := s.t.now()
	s.mu.Lock()
	n := 0
	for s.head < len(s.q) {
		e := &s.q[s.head]
		late := now-e.enq >= cfg.AckTimeout
		spent := s.nsent == 0 && int(e.attempts) >= cfg.MaxAttempts
		if !late && !spent {
			break
		}
		x := s.pop()
		s.calls = append(s.calls, doneCall{x.done, ErrUnacknowledged})
		n++
		// A popped message in flight leaves the in-flight window.
		s.nsent = max(s.nsent-1, 0)
	}
	s.mu.Unlock()
	if n > 0 {
		s.stats.droppedUnacked.Add(uint64(n))
		s.stats.dropped.Add(uint64(n))
		s.t.log.Warn("forwarded messages not acknowledged", "peer", s.id, "count", n)
	}
	s.callDone()
}

// pop removes the head entry and returns a copy. Called with s.mu held.
func (s *peerSender) pop() entry {
	if s.space != nil {
		close(s.space) // room for SendWait
		s.space = nil
	}
	e := s.q[s.head]
	s.q[s.head] = entry{}
	s.head++
	s.bytes -= int(e.size)
	switch {
	case s.head == len(s.q):
		s.q, s.head = s.q[:0], 0
	case s.head >= 1024 && s.head*2 >= len(s.q):
		n := copy(s.q, s.q[s.head:])
		clear(s.q[n:])
		s.q, s.head = s.q[:n], 0
	}
	return e
}

// headDeadline is when the oldest message expires.
func (s *peerSender) headDeadline() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head == len(s.q) {
		return 0, false
	}
	return s.q[s.head].enq + s.t.cfg.AckTimeout, true
}

func (s *peerSender) observeLatency(d time.Duration) {
	if d > time.Duration(s.stats.latencyMax.Load()) {
		s.stats.latencyMax.Store(int64(d))
	}
	old := time.Duration(s.stats.latency.Load())
	if old == 0 {
		s.stats.latency.Store(int64(d))
		return
	}
	s.stats.latency.Store(int64(old + (d-old)/8))
}

// drain runs when run exits: everything pending gets the stop error, and
// later Sends get it at once.
func (s *peerSender) drain() {
	err := ErrClosed
	if p := s.stopErr.Load(); p != nil {
		err = *p
	}
	s.mu.Lock()
	s.closed = err
	if s.space != nil {
		close(s.space) // SendWait callers see closed
		s.space = nil
	}
	n := 0
	for s.head < len(s.q) {
		e := s.pop()
		s.calls = append(s.calls, doneCall{e.done, err})
		n++
	}
	s.nsent = 0
	s.mu.Unlock()
	s.stats.dropped.Add(uint64(n))
	s.callDone()
}

// callDone calls the collected done callbacks, in order, outside the lock.
// A panicking callback is logged and does not stop the others.
func (s *peerSender) callDone() {
	for i, c := range s.calls {
		s.call(c)
		s.calls[i] = doneCall{}
	}
	s.calls = s.calls[:0]
}

func (s *peerSender) call(c doneCall) {
	defer func() {
		if r := recover(); r != nil {
			s.t.log.Error("done callback panic", "peer", s.id, "panic", r)
		}
	}()
	c.fn(c.err)
}

// retryBackoff doubles from min to max, with ±20% jitter.
type retryBackoff struct {
	min, max, cur time.Duration
}

func (b *retryBackoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	j := time.Duration(rand.Int64N(int64(b.cur)/5 + 1))
	if rand.IntN(2) == 0 {
		return b.cur - j
	}
	return b.cur + j
}

func (b *retryBackoff) reset() { b.cur = 0 }
