package transport

import (
	"fmt"
	"math/rand/v2"
	"time"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// The outbox of a peerSender: q[head:] in sequence order, bounded by count
// and bytes. Send appends (under mu); run takes acknowledged and expired
// messages off the head and calls their done callbacks outside the lock.

// entry is one message in a peer's outbox: its record in the packed
// layout (message.go), encoded once by Send.
type entry struct {
	rec      []byte // a view of one of the outbox's chunks
	done     func(error)
	seq      uint64
	enq      time.Duration // Transport.now() at Send
	attempts int32         // sends so far
}

// chunkSize is the size of the buffers Send encodes records into; a larger
// record gets a buffer of its own. A chunk is freed by the garbage
// collector once the last of its messages left the outbox.
const chunkSize = 64 << 10

func (s *peerSender) send(m *pb.ForwardedMessage, done func(error)) {
	s.enqueue(m, recordSize(m), done, s.t.now(), false)
}

// enqueue encodes m (whose recordSize is size) into the outbox and keeps
// no reference to it; now is Transport.now(). When the outbox is full it
// fails m with ErrOutboxFull, or, with wait, leaves m and returns a
// channel that is closed when messages leave the outbox (SendWait).
func (s *peerSender) enqueue(m *pb.ForwardedMessage, size int, done func(error), now time.Duration, wait bool) (space <-chan struct{}) {
	if size+msgOverhead+batchOverhead > s.t.cfg.MaxMsgSize {
		s.stats.dropped.Add(1)
		done(fmt.Errorf("%w: %d bytes to forward, limit %d", ErrTooLarge, size, s.t.cfg.MaxMsgSize))
		return nil
	}
	s.mu.Lock()
	if err := s.closed; err != nil {
		s.mu.Unlock()
		s.stats.dropped.Add(1)
		done(err)
		return nil
	}
	if len(s.q)-s.head >= s.t.cfg.OutboxMessages || s.bytes+size > s.t.cfg.OutboxBytes {
		if wait {
			if s.space == nil {
				s.space = make(chan struct{})
			}
			ch := s.space
			s.mu.Unlock()
			return ch
		}
		s.mu.Unlock()
		s.stats.droppedFull.Add(1)
		s.stats.dropped.Add(1)
		done(ErrOutboxFull)
		return nil
	}
	if cap(s.chunk)-len(s.chunk) < size {
		s.chunk = make([]byte, 0, max(chunkSize, size))
	}
	off := len(s.chunk)
	s.chunk = appendRecord(s.chunk, m)
	rec := s.chunk[off:len(s.chunk):len(s.chunk)]
	s.seq++
	s.q = append(s.q, entry{rec: rec, done: done, seq: s.seq, enq: now})
	s.bytes += size
	s.mu.Unlock()
	s.stats.enqueued.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// acknowledge completes the messages up to upTo, in order.
func (s *peerSender) acknowledge(upTo uint64) {
	now := s.t.now()
	s.mu.Lock()
	if s.head == len(s.q) || s.q[s.head].seq > upTo {
		s.mu.Unlock()
		return
	}
	n := 0
	ewma, worst := time.Duration(s.stats.latency.Load()), time.Duration(s.stats.latencyMax.Load())
	for s.head < len(s.q) && s.q[s.head].seq <= upTo {
		e := s.pop()
		s.calls = append(s.calls, doneCall{e.done, nil})
		ewma, worst = observeLatency(ewma, worst, now-e.enq)
		n++
	}
	s.nsent = max(s.nsent-n, 0)
	s.mu.Unlock()
	s.stats.latency.Store(int64(ewma))
	s.stats.latencyMax.Store(int64(worst))
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
	s.bytes -= len(e.rec)
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

// observeLatency adds d, the time from Send to acknowledgement of one
// message, to the moving average ewma and the maximum worst. Only run
// writes them (in acknowledge), once per acknowledgement.
func observeLatency(ewma, worst, d time.Duration) (time.Duration, time.Duration) {
	worst = max(worst, d)
	if ewma == 0 {
		return d, worst
	}
	return ewma + (d-ewma)/8, worst
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
