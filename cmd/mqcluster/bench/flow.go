package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Target is one broker under test.
type Target struct {
	Name string
	Addr string // host:port of its MQTT listener
	// SubAddr, when set, is where the subscribers connect instead of Addr:
	// another node of a cluster.
	SubAddr string
	// PID is the broker's process, whose CPU time and resident memory are
	// measured; 0 when it has none of its own (an in-process test broker).
	PID int
	// Transport is how clients reach Addr: tcp (also when empty), tls, ws
	// or wss; TLS is the client configuration of tls and wss.
	Transport string
	TLS       *tls.Config
}

// flow is one publish/subscribe load: Publishers publish Messages in all,
// publisher i on topic bench/<Name>/<i>, and each of Subscribers subscribes
// to bench/<Name>/+ and must receive every message.
type flow struct {
	Name        string
	Title       string
	Publishers  int
	Subscribers int
	QoS         byte // of the PUBLISHes and of the subscriptions
	Messages    int  // in all, over every publisher
	// Rate paces each publisher at this many messages per second (a ticker);
	// 0 publishes as fast as the connection takes them.
	Rate int
	// Window is the number of PUBACKs a QoS 1 publisher may await at once.
	Window      int
	PayloadSize int
	// MustNotLose makes a lost message an error, not just a figure (QoS 1).
	MustNotLose bool
}

// Result is what one flow measured on one broker. Durations are in
// nanoseconds in the JSON form.
type Result struct {
	Broker    string `json:"broker"`
	Transport string `json:"transport,omitempty"`
	Scenario  string `json:"scenario"`

	Sent       int64 `json:"sent"`       // PUBLISHes written by the publishers
	Acked      int64 `json:"acked"`      // PUBACKs received by QoS 1 publishers
	Expected   int64 `json:"expected"`   // deliveries due: Sent × subscribers
	Received   int64 `json:"received"`   // distinct messages the subscribers got
	Lost       int64 `json:"lost"`       // Expected − Received
	Duplicates int64 `json:"duplicates"` // messages received more than once
	Stalled    bool  `json:"stalled"`    // gave up waiting for the missing ones

	Elapsed    time.Duration `json:"elapsed_ns"`      // first send to last receive
	Throughput float64       `json:"delivered_per_s"` // Received / Elapsed
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`

	BrokerCPU    time.Duration `json:"broker_cpu_ns"` // over the flow; 0: not measured
	CPUPerMsg    float64       `json:"broker_cpu_ns_per_msg"`
	GenCPUPerMsg float64       `json:"generator_cpu_ns_per_msg"`

	// The idle scenario.
	Conns      int     `json:"conns,omitempty"`
	RSSBefore  int64   `json:"rss_before_bytes,omitempty"`
	RSSAfter   int64   `json:"rss_after_bytes,omitempty"`
	KiBPerConn float64 `json:"kib_per_conn,omitempty"`

	// The cluster scenarios: subscribes granted (failover: tries made) and
	// their rate; failover names the killed leader and the node asked.
	Ops       int64   `json:"ops,omitempty"`
	OpsPerSec float64 `json:"ops_per_s,omitempty"`
	Leader    string  `json:"leader,omitempty"`
	Survivor  string  `json:"survivor,omitempty"`

	Err string `json:"error,omitempty"`
}

// runner runs flows against brokers.
type runner struct {
	d     dialer
	epoch time.Time // send and receive instants are time.Since(epoch)
	// stall is how long a flow waits without any progress (nothing sent,
	// nothing received) before it counts what is missing as lost.
	stall time.Duration
}

func newRunner(stall time.Duration) *runner {
	return &runner{epoch: time.Now(), stall: stall}
}

func (r *runner) now() time.Duration { return time.Since(r.epoch) }

// publisher is one publishing connection of a flow.
type publisher struct {
	c     *client
	idx   uint32
	n     int // messages to send
	sent  atomic.Int64
	acked atomic.Int64
	err   error
	// QoS 1: window holds a token per PUBACK awaited; allAcked is closed
	// after the last one.
	window   chan struct{}
	allAcked chan struct{}
	_        [64]byte // keep the counters of neighbours off one cache line
}

// subscriber is one subscribing connection of a flow. Everything but
// received is owned by its goroutine until it ends.
type subscriber struct {
	c        *client
	received atomic.Int64 // distinct messages
	dups     int64
	last     time.Duration
	seen     []uint64 // bitmap over message numbers
	hist     histogram
	ack      [4]byte
	err      error
	done     chan struct{}
	_        [64]byte
}

// runFlow runs f against t once and measures it.
func (r *runner) runFlow(ctx context.Context, t Target, f flow) (Result, error) {
	res := Result{Broker: t.Name, Scenario: f.Name}
	if f.Publishers <= 0 || f.Subscribers <= 0 || f.Messages < f.Publishers {
		return res, fmt.Errorf("%s: needs at least one publisher, one subscriber and a message per publisher", f.Name)
	}
	// Message numbers: publisher i sends counts[i] messages numbered
	// offsets[i] onwards.
	counts := make([]int, f.Publishers)
	offsets := make([]int, f.Publishers)
	for i := range counts {
		counts[i] = f.Messages / f.Publishers
		if i < f.Messages%f.Publishers {
			counts[i]++
		}
		if i > 0 {
			offsets[i] = offsets[i-1] + counts[i-1]
		}
	}

	var clients []*client
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	subs := make([]*subscriber, f.Subscribers)
	for i := range subs {
		subAddr := t.Addr
		if t.SubAddr != "" {
			subAddr = t.SubAddr
		}
		c, err := dialClient(ctx, &r.d, t, subAddr, fmt.Sprintf("bench-%s-sub-%d", f.Name, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, c)
		if err := c.subscribe("bench/"+f.Name+"/+", f.QoS); err != nil {
			return res, err
		}
		subs[i] = &subscriber{c: c, seen: make([]uint64, (f.Messages+63)/64), done: make(chan struct{})}
	}
	pubs := make([]*publisher, f.Publishers)
	for i := range pubs {
		c, err := dialClient(ctx, &r.d, t, t.Addr, fmt.Sprintf("bench-%s-pub-%d", f.Name, i))
		if err != nil {
			return res, err
		}
		clients = append(clients, c)
		pubs[i] = &publisher{c: c, idx: uint32(i), n: counts[i]}
	}

	var wg sync.WaitGroup
	for _, p := range pubs {
		if f.QoS > 0 {
			p.window = make(chan struct{}, max(f.Window, 1))
			p.allAcked = make(chan struct{})
			wg.Go(p.readAcks)
		}
	}
	for _, s := range subs {
		wg.Go(func() { r.subscribe(s, f, offsets, counts) })
	}
	start := make(chan struct{})
	quit := make(chan struct{})
	var pubsDone sync.WaitGroup
	for _, p := range pubs {
		pubsDone.Add(1)
		wg.Go(func() {
			defer pubsDone.Done()
			<-start
			r.publish(p, f, quit)
		})
	}
	allPublished := make(chan struct{})
	go func() { pubsDone.Wait(); close(allPublished) }()

	cpu0, cpuErr := sampleCPU(t.PID)
	gen0 := selfCPU()
	t0 := r.now()
	close(start)

	res.Stalled = r.await(ctx, pubs, subs, allPublished)

	cpu1, cpuErr1 := sampleCPU(t.PID)
	gen1 := selfCPU()
	close(quit)
	for _, c := range clients {
		c.close()
	}
	clients = nil
	wg.Wait()

	var h histogram
	var last time.Duration
	var notes []error
	for _, p := range pubs {
		res.Sent += p.sent.Load()
		res.Acked += p.acked.Load()
		if p.err != nil && !errors.Is(p.err, net.ErrClosed) {
			notes = append(notes, fmt.Errorf("publisher %d: %w", p.idx, p.err))
		}
	}
	for i, s := range subs {
		res.Received += s.received.Load()
		res.Duplicates += s.dups
		h.merge(&s.hist)
		last = max(last, s.last)
		if s.err != nil {
			notes = append(notes, fmt.Errorf("subscriber %d: %w", i, s.err))
		}
	}
	if len(notes) > 0 {
		// Reported with the figures; a failure only when it cost QoS 1
		// messages (below).
		res.Err = errors.Join(notes...).Error()
	}
	res.Expected = res.Sent * int64(f.Subscribers)
	res.Lost = res.Expected - res.Received
	if last > t0 {
		res.Elapsed = last - t0
		res.Throughput = float64(res.Received) / res.Elapsed.Seconds()
	}
	res.P50, res.P99, res.Max = h.quantile(0.50), h.quantile(0.99), h.max
	if res.Received > 0 {
		if t.PID > 0 && cpuErr == nil && cpuErr1 == nil {
			res.BrokerCPU = cpuUsed(cpu0, cpu1)
			res.CPUPerMsg = float64(res.BrokerCPU) / float64(res.Received)
		}
		res.GenCPUPerMsg = float64(gen1-gen0) / float64(res.Received)
	}
	if cpuErr != nil || cpuErr1 != nil {
		return res, errors.Join(cpuErr, cpuErr1)
	}
	if f.MustNotLose && (res.Lost > 0 || res.Sent < int64(f.Messages)) {
		return res, fmt.Errorf("%s on %s: QoS %d lost %d of %d deliveries (%d of %d messages sent)",
			f.Name, t.Name, f.QoS, res.Lost, res.Expected, res.Sent, f.Messages)
	}
	return res, nil
}

// sampleCPU reads the CPU time of pid; a zero sample when pid is 0.
func sampleCPU(pid int) (cpuSample, error) {
	if pid <= 0 {
		return cpuSample{}, nil
	}
	return readCPU(pid)
}

// await returns once every subscriber has every message, or once nothing
// has been sent or received for r.stall (then it reports true).
func (r *runner) await(ctx context.Context, pubs []*publisher, subs []*subscriber, allPublished <-chan struct{}) (stalled bool) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var progress int64 = -1
	lastChange := time.Now()
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		select {
		case <-allPublished:
			done := true
			for _, s := range subs {
				select {
				case <-s.done:
				default:
					done = false
				}
			}
			if done {
				return false
			}
		default:
		}
		var p int64
		for _, pb := range pubs {
			p += pb.sent.Load() + pb.acked.Load()
		}
		for _, s := range subs {
			p += s.received.Load()
		}
		if p != progress {
			progress, lastChange = p, time.Now()
		} else if time.Since(lastChange) > r.stall {
			return true
		}
	}
}

// publish sends p's messages: as fast as the connection takes them, or
// paced at f.Rate; QoS 1 with at most f.Window PUBACKs outstanding.
//
// Paced, message i is due at start + i/Rate. A ticker wakes the publisher;
// when it woke late (a busy machine delays timers) it sends every message
// that is due at once, so that the rate holds on average. Each message is
// stamped when it is actually written, so a late generator does not count
// as broker latency.
func (r *runner) publish(p *publisher, f flow, quit <-chan struct{}) {
	frame := newPubFrame("bench/"+f.Name+"/"+strconv.Itoa(int(p.idx)), f.QoS, f.PayloadSize)
	w := p.c.w
	window := p.window
	var tick <-chan time.Time
	var interval, due time.Duration
	if f.Rate > 0 {
		interval = time.Second / time.Duration(f.Rate)
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
		due = r.now()
	}
	for i := 0; i < p.n; i++ {
		if tick != nil {
			for r.now() < due {
				select {
				case <-tick:
				case <-quit:
					return
				}
			}
			due += interval
		}
		if window != nil {
			select {
			case window <- struct{}{}:
			default:
				// The window is full: send what is buffered, then wait.
				if err := w.Flush(); err != nil {
					p.err = err
					return
				}
				select {
				case window <- struct{}{}:
				case <-quit:
					return
				}
			}
		}
		b := frame.stamp(uint16(i%0xFFFF+1), r.now(), p.idx, uint32(i))
		if _, err := w.Write(b); err != nil {
			p.err = err
			return
		}
		if tick != nil {
			if err := w.Flush(); err != nil {
				p.err = err
				return
			}
		}
		p.sent.Add(1)
	}
	if err := w.Flush(); err != nil {
		p.err = err
		return
	}
	if window != nil {
		select {
		case <-p.allAcked:
		case <-quit:
		}
	}
}

// readAcks takes PUBACKs off a QoS 1 publisher's connection, freeing a
// window slot for each, and closes allAcked after the last. It ends when the
// connection closes.
func (p *publisher) readAcks() {
	for {
		b0, _, err := p.c.readFrame()
		if err != nil {
			return
		}
		if packet.Type(b0>>4) != packet.PUBACK {
			continue
		}
		select {
		case <-p.window:
		default:
		}
		if p.acked.Add(1) == int64(p.n) {
			close(p.allAcked)
		}
	}
}

// subscribe receives until s has every message, acknowledging QoS 1
// messages (the acknowledgements go out whenever the input runs dry).
func (r *runner) subscribe(s *subscriber, f flow, offsets, counts []int) {
	c := s.c
	want := int64(f.Messages)
	for {
		if c.r.Buffered() == 0 && c.w.Buffered() > 0 {
			if err := c.w.Flush(); err != nil {
				s.err = err
				return
			}
		}
		b0, body, err := c.readFrame()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.err = err
			}
			return
		}
		if packet.Type(b0>>4) != packet.PUBLISH {
			continue
		}
		now := r.now()
		qos, id, payload, err := publishBody(b0, body)
		if err != nil {
			s.err = err
			return
		}
		if qos > 0 {
			s.ack = [4]byte{byte(packet.PUBACK) << 4, 2, byte(id >> 8), byte(id)}
			c.w.Write(s.ack[:])
		}
		if len(payload) < stampSize {
			s.err = fmt.Errorf("payload of %d bytes: not from this benchmark", len(payload))
			return
		}
		sent, pub, seq := decodeStamp(payload)
		if int(pub) >= len(counts) || int(seq) >= counts[pub] {
			s.err = fmt.Errorf("message %d/%d: not from this flow", pub, seq)
			return
		}
		n := offsets[pub] + int(seq)
		if s.seen[n/64]&(1<<(n%64)) != 0 {
			s.dups++
			continue
		}
		s.seen[n/64] |= 1 << (n % 64)
		s.hist.record(now - sent)
		s.last = now
		if s.received.Add(1) == want {
			c.w.Flush()
			close(s.done)
			return
		}
	}
}
