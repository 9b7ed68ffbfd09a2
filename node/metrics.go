package node

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/fsm"
)

// nodeMetrics are the latencies the node measures for its operators. They
// are atomics, observed where the work happens and read when metrics are
// scraped; nothing on the message path touches them.
type nodeMetrics struct {
	propose latency // Propose, end to end: forwarding to the leader and retries included
	commit  latency // raft.Apply on the leader: committed and applied there
	apply   latency // one entry through the FSM
}

// Bounds of the histograms: proposals take a quorum round trip and an
// fsync; an FSM apply is in-memory work.
var (
	proposeBounds = []time.Duration{
		500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
		250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
		5 * time.Second, 10 * time.Second,
	}
	applyBounds = []time.Duration{
		5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
		100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
		2500 * time.Microsecond, 10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond,
	}
)

// latency is a histogram of durations over fixed bounds.
type latency struct {
	counts [16]atomic.Uint64 // per bound, then one past the last bound
	sum    atomic.Int64      // nanoseconds
}

// since observes the time elapsed since start, against proposeBounds.
func (l *latency) since(start time.Time) { l.observe(time.Since(start), proposeBounds) }

func (l *latency) observe(d time.Duration, bounds []time.Duration) {
	i := 0
	for i < len(bounds) && d > bounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sum.Add(int64(d))
}

// Histogram is a latency histogram read at one moment.
type Histogram struct {
	// Bounds are the buckets' upper bounds; Cumulative[i] counts the
	// observations at or below Bounds[i].
	Bounds     []time.Duration
	Cumulative []uint64
	Count      uint64
	Sum        time.Duration
}

func (l *latency) read(bounds []time.Duration) Histogram {
	h := Histogram{Bounds: bounds, Cumulative: make([]uint64, len(bounds)), Sum: time.Duration(l.sum.Load())}
	var total uint64
	for i := range bounds {
		total += l.counts[i].Load()
		h.Cumulative[i] = total
	}
	h.Count = total + l.counts[len(bounds)].Load()
	return h
}

// Latencies are the node's latency histograms.
type Latencies struct {
	// Propose is the time of this node's proposals, from the call to the
	// state machine's answer (a follower's go through the leader).
	Propose Histogram
	// Commit is the time the leader's Raft takes to commit and apply one
	// entry it proposed (for this node or for a follower).
	Commit Histogram
	// Apply is the time one entry takes in the state machine.
	Apply Histogram
}

// Latencies reads the latency histograms.
func (n *Node) Latencies() Latencies {
	return Latencies{
		Propose: n.metrics.propose.read(proposeBounds),
		Commit:  n.metrics.commit.read(proposeBounds),
		Apply:   n.metrics.apply.read(applyBounds),
	}
}

// timedFSM is the FSM as Raft sees it: each Apply is timed.
type timedFSM struct {
	f *fsm.FSM
	l *latency
}

func (t timedFSM) Apply(l *raft.Log) any {
	start := time.Now()
	r := t.f.Apply(l)
	t.l.observe(time.Since(start), applyBounds)
	return r
}

func (t timedFSM) Snapshot() (raft.FSMSnapshot, error) { return t.f.Snapshot() }
func (t timedFSM) Restore(rc io.ReadCloser) error      { return t.f.Restore(rc) }
