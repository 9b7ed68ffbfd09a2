package broker

import (
	"math"
	"net"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// sysTree publishes the broker's figures under $SYS in Mosquitto's layout
// (see DESIGN.md): every Config.SysInterval it compares each figure with
// the value it last published and routes the changed ones to this node's
// subscribers. The latest value of every topic is kept in a map of its own,
// from which a new subscription gets them at once, as retained messages.
//
// The figures are this node's: they are delivered with local routing only,
// never forwarded to other nodes, and never enter the retained set that the
// cluster replicates.
type sysTree struct {
	srv      *Server
	interval time.Duration
	version  string
	// retained holds the latest message of every $SYS topic.
	retained *retainedSet

	// Owned by the goroutine that runs update (New, then run).
	last    map[string]string // payload last published per topic
	loads   []sysLoad
	lastAt  time.Time
	heap    []metrics.Sample
	heapMax uint64
	walkBuf []*session

	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// sysLoad is one exponentially decayed moving average of a counter's rate,
// per minute, over window (Mosquitto's $SYS/broker/load/...).
type sysLoad struct {
	topic  string
	window float64 // seconds: 60, 300 or 900
	count  func(*Stats) int64
	value  float64
	prev   int64
}

// sysLoadSources are the counters whose load averages are published, by
// the topic prefix under $SYS/broker/load.
var sysLoadSources = []struct {
	name  string
	count func(*Stats) int64
}{
	{"messages/received", func(st *Stats) int64 { return st.PacketsIn.Load() }},
	{"messages/sent", func(st *Stats) int64 { return st.PacketsOut.Load() }},
	{"publish/received", func(st *Stats) int64 { return st.PublishesIn.Load() }},
	{"publish/sent", func(st *Stats) int64 { return st.MessagesOut.Load() }},
	{"publish/dropped", func(st *Stats) int64 { return st.dropped() }},
	{"bytes/received", func(st *Stats) int64 { return st.BytesIn.Load() }},
	{"bytes/sent", func(st *Stats) int64 { return st.BytesOut.Load() }},
	{"connections", func(st *Stats) int64 { return st.ConnectionsTotal.Load() }},
}

func newSysTree(s *Server, version string) *sysTree {
	if version == "" {
		version = "dev"
	}
	return &sysTree{
		srv:      s,
		interval: s.cfg.SysInterval,
		version:  version,
		retained: newRetainedSet(),
		last:     make(map[string]string),
		heap:     []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}},
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// start publishes the first figures and starts the interval's goroutine;
// with SysInterval 0 there is no $SYS tree.
func (t *sysTree) start(now time.Time) {
	if t.interval <= 0 {
		close(t.done)
		return
	}
	t.set("$SYS/broker/version", "mqcluster version "+t.version)
	for _, src := range sysLoadSources {
		for _, w := range []struct {
			name string
			secs float64
		}{{"1min", 60}, {"5min", 300}, {"15min", 900}} {
			t.loads = append(t.loads, sysLoad{topic: "$SYS/broker/load/" + src.name + "/" + w.name,
				window: w.secs, count: src.count, prev: src.count(&t.srv.stats)})
		}
	}
	t.lastAt = now
	t.update(now)
	go t.run()
}

// stop ends the goroutine and waits for it; it is idempotent.
func (t *sysTree) stop() {
	t.stopOnce.Do(func() { close(t.quit) })
	<-t.done
}

func (t *sysTree) run() {
	defer close(t.done)
	tk := time.NewTicker(t.interval)
	defer tk.Stop()
	for {
		select {
		case <-t.quit:
			return
		case now := <-tk.C:
			t.update(now)
		}
	}
}

// update publishes the figures that changed since the last update.
func (t *sysTree) update(now time.Time) {
	s := t.srv
	st := &s.stats
	f := t.walkSessions()
	connected := st.Connected.Load()
	t.setInt("$SYS/broker/uptime", int64(now.Sub(s.start)/time.Second), " seconds")
	t.setInt("$SYS/broker/clients/connected", f.connected, "")
	t.setInt("$SYS/broker/clients/disconnected", f.disconnected, "")
	t.setInt("$SYS/broker/clients/total", f.connected+f.disconnected, "")
	t.setInt("$SYS/broker/clients/maximum", max(st.MaxConnected.Load(), connected, f.connected), "")
	t.setInt("$SYS/broker/messages/received", st.PacketsIn.Load(), "")
	t.setInt("$SYS/broker/messages/sent", st.PacketsOut.Load(), "")
	t.setInt("$SYS/broker/messages/stored", f.stored, "")
	t.setInt("$SYS/broker/bytes/received", st.BytesIn.Load(), "")
	t.setInt("$SYS/broker/bytes/sent", st.BytesOut.Load(), "")
	t.setInt("$SYS/broker/publish/messages/received", st.PublishesIn.Load(), "")
	t.setInt("$SYS/broker/publish/messages/sent", st.MessagesOut.Load(), "")
	t.setInt("$SYS/broker/publish/messages/dropped", st.dropped(), "")
	t.setInt("$SYS/broker/subscriptions/count", f.subs, "")
	t.setInt("$SYS/broker/shared_subscriptions/count", f.shared, "")
	if n, ok := s.retainedCount(); ok {
		t.setInt("$SYS/broker/retained messages/count", int64(n), "")
	}
	metrics.Read(t.heap)
	if v := t.heap[0].Value; v.Kind() == metrics.KindUint64 {
		t.heapMax = max(t.heapMax, v.Uint64())
		t.setInt("$SYS/broker/heap/current", int64(v.Uint64()), "")
		t.setInt("$SYS/broker/heap/maximum", int64(t.heapMax), "")
	}
	// Load averages as Mosquitto computes them: the rate of the last
	// interval, per minute, folded into the average with the weight
	// exp(-dt/window).
	if dt := now.Sub(t.lastAt).Seconds(); dt > 0 {
		for i := range t.loads {
			l := &t.loads[i]
			n := l.count(st)
			rate := float64(n-l.prev) * 60 / dt
			l.value = rate + math.Exp(-dt/l.window)*(l.value-rate)
			l.prev = n
			t.set(l.topic, strconv.FormatFloat(l.value, 'f', 2, 64))
		}
		t.lastAt = now
	}
}

// sessionFigures are what update counts over the sessions.
type sessionFigures struct {
	connected, disconnected int64
	stored                  int64 // queued and in-flight deliveries
	subs, shared            int64
}

// walkSessions counts over every session, holding Server.mu only to copy
// the list and each session's lock only for its own figures.
func (t *sysTree) walkSessions() sessionFigures {
	s := t.srv
	s.mu.Lock()
	list := t.walkBuf[:0]
	for _, ss := range s.sessions {
		list = append(list, ss)
	}
	s.mu.Unlock()
	var f sessionFigures
	for _, ss := range list {
		ss.mu.Lock()
		if ss.ended {
			ss.mu.Unlock()
			continue
		}
		if ss.conn != nil {
			f.connected++
		} else {
			f.disconnected++
		}
		f.stored += int64(ss.queue.len() + len(ss.inflight))
		f.subs += int64(len(ss.subs))
		for _, sub := range ss.subs {
			if sub.Group != "" {
				f.shared++
			}
		}
		ss.mu.Unlock()
	}
	clear(list)
	t.walkBuf = list[:0]
	return f
}

func (t *sysTree) setInt(name string, v int64, suffix string) {
	t.set(name, strconv.FormatInt(v, 10)+suffix)
}

// set publishes payload on name unless it is what name holds already.
func (t *sysTree) set(name, payload string) {
	if old, ok := t.last[name]; ok && old == payload {
		return
	}
	t.last[name] = payload
	m := &Message{Topic: name, Payload: []byte(payload), Retain: true}
	t.retained.set(m)
	// Local routing only: no forwarding to other nodes, no replicated
	// retained state. QoS 0: a figure is superseded at the next interval,
	// so queueing it for an offline session or waiting for its
	// acknowledgement gains nothing.
	t.srv.routeLocal(m, nil, nil, ackTo{}, false)
}

// retainedCount is the number of retained messages: this node's set, or
// the cluster's when the cluster can count it cheaply.
func (s *Server) retainedCount() (int, bool) {
	if s.cluster == nil {
		return s.retained.len(), true
	}
	if c, ok := s.cluster.(interface{ RetainedCount() int }); ok {
		return c.RetainedCount(), true
	}
	return 0, false
}

// retainedFor returns the retained messages a new subscription to filter
// gets. Only a filter whose first level is literally $SYS matches $SYS
// topics ([MQTT-4.7.2-1]), and only the server publishes there, so such a
// filter is served from this node's $SYS map alone.
func (s *Server) retainedFor(filter string) []*Message {
	if isSysTopic(filter) {
		return s.sys.retained.match(filter)
	}
	return s.retainedMatching(filter)
}

// dropped is the number of messages not delivered to a subscriber because
// of a limit (Mosquitto's publish/messages/dropped).
func (st *Stats) dropped() int64 {
	return st.DroppedQoS0.Load() + st.DroppedQueueFull.Load() + st.DroppedExpired.Load() + st.DroppedTooLarge.Load()
}

// onConnected runs once on the reader goroutine when the connection's
// CONNECT has been accepted: it counts the CONNECT and raises
// Stats.MaxConnected.
func (c *conn) onConnected() {
	c.pktsIn++
	st := &c.srv.stats
	n := st.Connected.Load()
	for {
		m := st.MaxConnected.Load()
		if n <= m || st.MaxConnected.CompareAndSwap(m, n) {
			return
		}
	}
}

// countIn counts one packet read by the reader goroutine. The counts go
// to Stats when nothing more is buffered: one atomic add per read system
// call rather than per packet.
func (c *conn) countIn(pk packet.Packet) {
	c.pktsIn++
	if p, ok := pk.(*packet.Publish); ok {
		c.pubsIn++
		c.qosIn[min(p.QoS, 2)]++
	}
	if c.rd.Buffered() == 0 {
		c.flushCounts()
	}
}

// flushCounts adds the reader's counts to Stats.
func (c *conn) flushCounts() {
	if c.pktsIn != 0 {
		c.srv.stats.PacketsIn.Add(c.pktsIn)
		c.pktsIn = 0
	}
	if c.pubsIn != 0 {
		c.srv.stats.PublishesIn.Add(c.pubsIn)
		c.pubsIn = 0
		for q, n := range c.qosIn {
			if n != 0 {
				c.srv.stats.PublishesInQoS[q].Add(int64(n))
				c.qosIn[q] = 0
			}
		}
	}
}

// countingConn counts the bytes read from a connection: one atomic add per
// read system call.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.n.Add(int64(n))
	}
	return n, err
}
