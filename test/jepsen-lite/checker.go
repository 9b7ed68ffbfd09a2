package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Result is one checker's verdict.
type Result struct {
	Name     string         `json:"name"`
	Valid    bool           `json:"valid"`
	Counts   map[string]int `json:"counts"`
	Examples []any          `json:"examples,omitempty"` // at most maxExamples
	Notes    []string       `json:"notes,omitempty"`
}

const maxExamples = 32

func newResult(name string) *Result {
	return &Result{Name: name, Valid: true, Counts: map[string]int{}}
}

// fail counts an anomaly of kind and keeps an example.
func (r *Result) fail(kind string, example any) {
	r.Valid = false
	r.note(kind, example)
}

// note counts an event that does not fail the checker, keeping an example.
func (r *Result) note(kind string, example any) {
	r.Counts[kind]++
	if example != nil && len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, example)
	}
}

// CheckParams are facts of the run the history does not hold.
type CheckParams struct {
	Healed int64 // history time of the final heal
	Nodes  int
}

// Check runs every checker over a history and the node logs.
func Check(ops []Op, logs map[string]string, p CheckParams) []*Result {
	ix := buildIndex(ops, p.Nodes)
	return []*Result{
		checkLost(ix),
		checkQoS2Duplicates(ix),
		checkOrder(ix),
		checkSessions(ix),
		checkRetained(ix),
		checkSubs(ix),
		checkLeaders(logs),
		checkOwners(ix),
		checkWills(ix),
		checkLiveness(ix, p.Healed),
		checkCrashes(ix, logs),
	}
}

// pubOp is one publish with its invocation and outcome.
type pubOp struct {
	Payload, Client, Topic string
	Conn, Node, QoS, Seq   int
	Invoke, Done           int64
	Outcome                string // ok, fail, info
	Reason                 int
	Retain                 bool
	Workload               string
}

// index gathers what the checkers share.
type index struct {
	ops      []Op
	nodes    int
	end      int64
	pubs     map[string]*pubOp // by payload id
	pubList  []*pubOp
	byClient map[string][]Op // completions and single events, in order
	invokes  map[int64]Op    // invocation of each operation id
	faults   []faultSpan
}

func buildIndex(ops []Op, nodes int) *index {
	ix := &index{ops: ops, nodes: nodes, pubs: map[string]*pubOp{}, byClient: map[string][]Op{}, invokes: map[int64]Op{}}
	for _, op := range ops {
		ix.end = max(ix.end, op.Time)
		if op.Type == "invoke" {
			ix.invokes[op.ID] = op
			continue
		}
		if op.Client != "" {
			ix.byClient[op.Client] = append(ix.byClient[op.Client], op)
		}
		if op.F == "publish" {
			p := &pubOp{Payload: op.Payload, Client: op.Client, Topic: op.Topic, Conn: op.Conn, Node: op.Node, QoS: op.QoS,
				Invoke: ix.invokes[op.ID].Time, Done: op.Time, Outcome: op.Type, Reason: -1, Retain: op.Retain,
				Workload: op.Workload, Seq: seqOf(op.Payload)}
			if op.Reason != nil {
				p.Reason = *op.Reason
			}
			ix.pubList = append(ix.pubList, p)
			if op.Payload != "" {
				ix.pubs[op.Payload] = p
			}
		}
	}
	ix.faults = faultSpans(ops, ix.end)
	return ix
}

// invokeTime of a completion (its own time for single events).
func (ix *index) invokeTime(op Op) int64 {
	if inv, ok := ix.invokes[op.ID]; ok && op.ID != 0 {
		return inv.Time
	}
	return op.Time
}

// acked: the publisher got a success (PUBACK/PUBCOMP below 0x80).
func (p *pubOp) acked() bool { return p.Outcome == "ok" && p.Reason < 0x80 }

// seqOf is the last #-separated field of a payload id, or -1.
func seqOf(payload string) int {
	i := strings.LastIndexByte(payload, '#')
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(payload[i+1:])
	if err != nil {
		return -1
	}
	return n
}

// topicMatch reports whether an MQTT filter matches a topic name.
func topicMatch(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) || (level != "+" && level != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

const forever = int64(math.MaxInt64)

// faultSpan is a fault's effect on the nodes over an interval: which
// nodes each node could reach (partitions), and which were down (killed,
// paused, removed).
type faultSpan struct {
	Start, End int64
	Kind       string
	Comps      [][]int
	Down       []int
	Slow       []int
}

// faultSpans pairs fault-start and fault-stop events; node starts after a
// kill are part of the kill's span.
func faultSpans(ops []Op, end int64) []faultSpan {
	var out []faultSpan
	open := map[string]int{}
	for _, op := range ops {
		switch op.F {
		case "fault-start":
			s := faultSpan{Start: op.Time, End: end, Kind: op.Value}
			if strings.HasPrefix(op.Value, "partition/") {
				var comp []int
				for _, n := range op.Nodes {
					if n < 0 {
						s.Comps = append(s.Comps, comp)
						comp = nil
						continue
					}
					comp = append(comp, n)
				}
			} else if strings.HasPrefix(op.Value, "slow/") {
				s.Slow = op.Nodes
			} else {
				s.Down = op.Nodes
			}
			open[op.Value] = len(out)
			out = append(out, s)
		case "fault-stop":
			if i, ok := open[op.Value]; ok {
				out[i].End = op.Time
				delete(open, op.Value)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// reach reports whether node a can reach node b under span s.
func (s faultSpan) reach(a, b int) bool {
	for _, d := range s.Down {
		if d == a || d == b {
			return false
		}
	}
	if len(s.Comps) == 0 || a == b {
		return true
	}
	for _, c := range s.Comps {
		ina, inb := false, false
		for _, m := range c {
			ina = ina || m == a
			inb = inb || m == b
		}
		if ina && inb {
			return true
		}
	}
	return false
}

// connected reports whether nodes a and b could talk at full speed, and
// both were up, throughout [t1, t2] (a restart in between counts as not).
// A slowed link counts as not: past cluster.timeout the broker answers a
// SUBSCRIBE without the slow peer's applied index, by design, and counts it.
func (ix *index) connected(a, b int, t1, t2 int64) bool {
	for _, s := range ix.faults {
		if s.End < t1 || s.Start > t2 {
			continue
		}
		if !s.reach(a, b) || slices.Contains(s.Slow, a) || slices.Contains(s.Slow, b) {
			return false
		}
	}
	return true
}

// inMinority reports whether node a was cut from a majority of the nodes
// (itself included) throughout [t1, t2].
func (ix *index) inMinority(a int, t1, t2 int64) bool {
	for _, s := range ix.faults {
		if len(s.Comps) == 0 || s.Start > t1 || s.End < t2 {
			continue
		}
		n := 0
		for b := 0; b < ix.nodes; b++ {
			if s.reach(a, b) {
				n++
			}
		}
		if n <= ix.nodes/2 {
			return true
		}
	}
	return false
}

// activeFaults names the faults overlapping [t1, t2].
func (ix *index) activeFaults(t1, t2 int64) []string {
	var out []string
	for _, s := range ix.faults {
		if s.End >= t1 && s.Start <= t2 {
			out = append(out, s.Kind)
		}
	}
	return out
}
