package main

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// hb builds synthetic histories: times in seconds, ids paired.
type hb struct {
	ops  []Op
	next int64
}

func (h *hb) add(t float64, op Op) Op {
	op.Time = int64(t * 1e9)
	op.Index = int64(len(h.ops))
	h.ops = append(h.ops, op)
	return op
}

// call adds an invoke at t1 and its completion at t2.
func (h *hb) call(t1, t2 float64, typ string, op Op) {
	h.next++
	op.ID = h.next
	inv := op
	inv.Type = "invoke"
	inv.Reason, inv.SessionPresent = nil, nil
	h.add(t1, inv)
	op.Type = typ
	h.add(t2, op)
}

func (h *hb) connect(t float64, client string, node, conn int, clean bool, expiry int64, present bool) {
	h.call(t, t+0.01, "ok", Op{F: "connect", Client: client, Node: node, Conn: conn, Proto: 5, CleanStart: clean,
		Expiry: expiry, SessionPresent: boolp(present)})
}

func (h *hb) subscribe(t float64, client, filter string, qos int) {
	h.call(t, t+0.01, "ok", Op{F: "subscribe", Client: client, Topic: filter, QoS: qos, Reason: reason(qos)})
}

func (h *hb) publish(t1, t2 float64, client string, node, conn int, topic, payload string, qos int, typ string, code int) {
	h.call(t1, t2, typ, Op{F: "publish", Client: client, Node: node, Conn: conn, Topic: topic, Payload: payload, QoS: qos, Reason: reason(code)})
}

func (h *hb) deliver(t float64, client string, conn int, topic, payload string, qos int) {
	h.add(t, Op{Type: "ok", F: "deliver", Client: client, Conn: conn, Topic: topic, Payload: payload, QoS: qos})
}

// index orders the ops by time, as a recorded history is.
func (h *hb) index() *index {
	ops := append([]Op(nil), h.ops...)
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Time < ops[j].Time })
	return buildIndex(ops, 3)
}

func expect(t *testing.T, r *Result, valid bool, kind string) {
	t.Helper()
	if r.Valid != valid {
		t.Fatalf("%s: valid %v, want %v (counts %v, examples %v)", r.Name, r.Valid, valid, r.Counts, r.Examples)
	}
	if kind != "" && r.Counts[kind] == 0 {
		t.Fatalf("%s: no %q counted: %v", r.Name, kind, r.Counts)
	}
}

// queueHistory: a persistent subscriber, two acknowledged publishes, both
// delivered; each test then breaks one thing.
func queueHistory() *hb {
	h := &hb{}
	h.connect(1, "sub", 0, 1, true, 3600, false)
	h.subscribe(1.1, "sub", "q/#", 1)
	h.publish(2, 2.1, "pub", 1, 1, "q/0", "pub#1#1", 1, "ok", 0)
	h.publish(2.2, 2.3, "pub", 1, 1, "q/0", "pub#1#2", 1, "ok", 0)
	return h
}

func TestLostPasses(t *testing.T) {
	h := queueHistory()
	h.deliver(2.15, "sub", 1, "q/0", "pub#1#1", 1)
	h.deliver(2.35, "sub", 1, "q/0", "pub#1#2", 1)
	expect(t, checkLost(h.index()), true, "required")
	expect(t, checkOrder(h.index()), true, "")
}

func TestLostFails(t *testing.T) {
	h := queueHistory()
	h.deliver(2.15, "sub", 1, "q/0", "pub#1#1", 1)
	expect(t, checkLost(h.index()), false, "lost")
}

func TestLostIgnoresUnacknowledgedAndEarlier(t *testing.T) {
	h := &hb{}
	h.publish(0.5, 0.6, "pub", 1, 1, "q/0", "pub#1#0", 1, "ok", 0) // before the SUBACK
	h.connect(1, "sub", 0, 1, true, 3600, false)
	h.subscribe(1.1, "sub", "q/#", 1)
	h.publish(2, 2.1, "pub", 1, 1, "q/0", "pub#1#1", 1, "info", 0)      // outcome unknown
	h.publish(2.2, 2.3, "pub", 1, 1, "q/0", "pub#1#2", 1, "fail", 0x80) // refused
	expect(t, checkLost(h.index()), true, "")
}

// A session that may have expired while its client was away owes nothing
// published after the expiry; one that could not have expired is lost.
func TestLostAccountsForExpiry(t *testing.T) {
	h := &hb{}
	h.connect(1, "sub", 0, 1, true, 5, false)
	h.subscribe(1.1, "sub", "q/#", 1)
	h.publish(9, 9.1, "pub", 1, 1, "q/0", "pub#1#1", 1, "ok", 0)
	h.connect(10, "sub", 2, 2, false, 5, false) // 9 s after the last connect: may have expired
	expect(t, checkLost(h.index()), true, "")
	expect(t, checkSessions(h.index()), true, "")

	// The connection ended at 8 s, the session expired 5 s later with no
	// connection in between: what was acknowledged after 8 s is owed to no
	// one; what was acknowledged while it was connected still is.
	h = &hb{}
	h.connect(1, "sub", 0, 1, true, 5, false)
	h.subscribe(1.1, "sub", "q/#", 1)
	h.publish(7, 7.1, "pub", 1, 1, "q/0", "pub#1#1", 1, "ok", 0)
	h.add(8, Op{Type: "ok", F: "abort", Client: "sub", Conn: 1})
	h.publish(8.5, 8.6, "pub", 1, 1, "q/0", "pub#1#2", 1, "ok", 0)
	h.connect(20, "sub", 2, 2, false, 5, false)
	r := checkLost(h.index())
	expect(t, r, false, "lost")
	if r.Counts["lost"] != 1 {
		t.Fatalf("lost %d, want 1 (the message acknowledged while connected): %v", r.Counts["lost"], r.Examples)
	}

	h = &hb{}
	h.connect(1, "sub", 0, 1, true, 3600, false)
	h.subscribe(1.1, "sub", "q/#", 1)
	h.publish(2, 2.1, "pub", 1, 1, "q/0", "pub#1#1", 1, "ok", 0)
	h.connect(3, "sub", 2, 2, false, 3600, false) // session gone too early
	expect(t, checkLost(h.index()), false, "lost")
	expect(t, checkSessions(h.index()), false, "session-lost")
}

func TestQoS2Duplicates(t *testing.T) {
	h := &hb{}
	h.connect(1, "sub", 0, 1, true, 3600, false)
	h.subscribe(1.1, "sub", "e/#", 2)
	h.publish(2, 2.1, "pub", 1, 1, "e/0", "pub#1#1", 2, "ok", 0)
	h.deliver(2.05, "sub", 1, "e/0", "pub#1#1", 2)
	expect(t, checkQoS2Duplicates(h.index()), true, "checked")
	h.deliver(2.5, "sub", 1, "e/0", "pub#1#1", 2)
	expect(t, checkQoS2Duplicates(h.index()), false, "duplicate")
	// At QoS 1 a duplicate is counted, not failed.
	q := queueHistory()
	q.deliver(2.15, "sub", 1, "q/0", "pub#1#1", 1)
	q.deliver(2.16, "sub", 1, "q/0", "pub#1#1", 1)
	q.deliver(2.35, "sub", 1, "q/0", "pub#1#2", 1)
	r := checkLost(q.index())
	expect(t, r, true, "qos1-duplicates")
}

func TestOrder(t *testing.T) {
	h := queueHistory()
	h.deliver(2.35, "sub", 1, "q/0", "pub#1#2", 1)
	h.deliver(2.36, "sub", 1, "q/0", "pub#1#1", 1)
	expect(t, checkOrder(h.index()), false, "reorder")
	// A redelivery of an earlier message is no reorder: first deliveries count.
	h = queueHistory()
	h.deliver(2.15, "sub", 1, "q/0", "pub#1#1", 1)
	h.deliver(2.35, "sub", 1, "q/0", "pub#1#2", 1)
	h.deliver(2.36, "sub", 1, "q/0", "pub#1#1", 1)
	expect(t, checkOrder(h.index()), true, "")
}

func retainedHistory(final0, final1 []string) *hb {
	h := &hb{}
	h.publish(1, 1.1, "retained-w0", 0, 1, "r/0", "retained-w0#1", 1, "ok", 0)
	h.publish(2, 2.1, "retained-w0", 0, 1, "r/0", "", 1, "ok", 0) // delete
	h.publish(3, 3.1, "retained-w0", 0, 1, "r/0", "retained-w0#3", 1, "ok", 0)
	for i := range h.ops {
		h.ops[i].Retain, h.ops[i].Workload = true, "retained"
	}
	for round, vals := range [][]string{final0, final1} {
		for node, v := range vals {
			values := map[string]string{}
			if v != "" {
				values["r/0"] = v
			}
			h.call(10+float64(round), 10.5+float64(round), "ok", Op{F: "read", Node: node,
				Client: "retained-final" + string(rune('0'+round)) + "-n" + string(rune('0'+node)), Values: values})
		}
	}
	return h
}

func TestRetained(t *testing.T) {
	v := "retained-w0#3"
	expect(t, checkRetained(retainedHistory([]string{v, v, v}, []string{v, v, v}).index()), true, "reads")
	expect(t, checkRetained(retainedHistory([]string{v, v, v}, []string{v, v, "retained-w0#1"}).index()), false, "diverged")
	old := "retained-w0#1"
	expect(t, checkRetained(retainedHistory([]string{old, old, old}, []string{old, old, old}).index()), false, "wrong-final-value")
	// Going back on one node: a read after a newer one returns an older value.
	h := retainedHistory([]string{v, v, v}, []string{v, v, v})
	h.call(4, 4.5, "ok", Op{F: "read", Node: 1, Client: "retained-read1", Values: map[string]string{"r/0": v}})
	h.call(5, 5.5, "ok", Op{F: "read", Node: 1, Client: "retained-read2", Values: map[string]string{"r/0": old}})
	expect(t, checkRetained(h.index()), false, "went-back")
}

func TestSubs(t *testing.T) {
	base := func() *hb {
		h := &hb{}
		h.connect(1, "subs-w0-c0", 0, 1, true, 0, false)
		h.subscribe(1.1, "subs-w0-c0", "s/0/0", 1)
		h.publish(2, 2.1, "subs-w0-c0-in-n1", 1, 1, "s/0/0", "subs-w0-c0-in-n1", 1, "ok", 0)
		return h
	}
	h := base()
	h.deliver(2.05, "subs-w0-c0", 1, "s/0/0", "subs-w0-c0-in-n1", 1)
	h.call(5, 5.1, "ok", Op{F: "unsubscribe", Client: "subs-w0-c0", Topic: "s/0/0", Reason: reason(0)})
	h.publish(6, 6.1, "subs-w0-c0-out-n1", 1, 1, "s/0/0", "subs-w0-c0-out-n1", 1, "ok", 0)
	expect(t, checkSubs(h.index()), true, "required")
	h.deliver(6.2, "subs-w0-c0", 1, "s/0/0", "subs-w0-c0-out-n1", 1)
	expect(t, checkSubs(h.index()), false, "delivered-after-unsuback")

	h = base()
	h.call(5, 5.1, "ok", Op{F: "unsubscribe", Client: "subs-w0-c0", Topic: "s/0/0", Reason: reason(0)})
	expect(t, checkSubs(h.index()), false, "missed-after-suback")
	// Across a partition between the two nodes the probe is not owed.
	h = &hb{}
	h.add(0.5, Op{Type: "info", F: "fault-start", Value: "partition/isolate-one", Nodes: []int{1, -1, 0, 2, -1}})
	h.ops = append(h.ops, base().ops...)
	h.call(5, 5.1, "ok", Op{F: "unsubscribe", Client: "subs-w0-c0", Topic: "s/0/0", Reason: reason(0)})
	expect(t, checkSubs(h.index()), true, "missed-across-fault")
}

func TestOwners(t *testing.T) {
	h := &hb{}
	h.connect(1, "hop0", 0, 1, true, 3600, false)
	h.connect(3, "hop0", 1, 2, false, 3600, true)
	h.add(3.1, Op{Type: "info", F: "conn-lost", Client: "hop0", Conn: 1})
	h.deliver(4, "hop0", 2, "h/0", "x#1#1", 1)
	expect(t, checkOwners(h.index()), true, "takeovers")
	h = &hb{}
	h.connect(1, "hop0", 0, 1, true, 3600, false)
	h.connect(3, "hop0", 1, 2, false, 3600, true)
	h.deliver(9, "hop0", 1, "h/0", "x#1#1", 1)
	expect(t, checkOwners(h.index()), false, "two-owners")
}

func TestWills(t *testing.T) {
	base := func(ending string) *hb {
		h := &hb{}
		h.connect(1, "will-watch0", 1, 1, true, 3600, false)
		h.subscribe(1.1, "will-watch0", "will/#", 2)
		h.call(2, 2.1, "ok", Op{F: "connect", Client: "will-n0-0-c0", Node: 0, Conn: 1, Proto: 5, CleanStart: true,
			Topic: "will/will-n0-0-c0", Payload: "will-n0-0-c0", QoS: 2, SessionPresent: boolp(false)})
		h.add(5, Op{Type: "ok", F: ending, Client: "will-n0-0-c0", Conn: 1})
		return h
	}
	h := base("conn-lost")
	h.deliver(6, "will-watch0", 1, "will/will-n0-0-c0", "will-n0-0-c0", 2)
	expect(t, checkWills(h.index()), true, "as-expected")
	expect(t, checkWills(base("conn-lost").index()), false, "will-lost")
	h.deliver(7, "will-watch0", 1, "will/will-n0-0-c0", "will-n0-0-c0", 2)
	expect(t, checkWills(h.index()), false, "will-duplicated")
	h = base("disconnect")
	h.deliver(6, "will-watch0", 1, "will/will-n0-0-c0", "will-n0-0-c0", 2)
	expect(t, checkWills(h.index()), false, "will-after-normal-disconnect")
}

func TestLiveness(t *testing.T) {
	h := &hb{}
	for n := 0; n < 3; n++ {
		h.call(21, 22, "ok", Op{F: "probe", Workload: "liveness", Node: n})
	}
	expect(t, checkLiveness(h.index(), 20e9), true, "recovered")
	h.ops = h.ops[:4]
	expect(t, checkLiveness(h.index(), 20e9), false, "never-recovered")
	h = &hb{}
	for n := 0; n < 3; n++ {
		h.call(31, 32, "ok", Op{F: "probe", Workload: "liveness", Node: n})
	}
	expect(t, checkLiveness(h.index(), 20e9), false, "slow-recovery")
}

func TestLeadersAndCrashes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	logs := map[string]string{
		"n0": write("n0.log", `{"msg":"raft: election won: term=2 tally=2"}`+"\n"),
		"n1": write("n1.log", `{"msg":"raft: election won: term=3 tally=2"}`+"\n"),
	}
	expect(t, checkLeaders(logs), true, "elections")
	expect(t, checkCrashes(buildIndex(nil, 2), logs), true, "")
	logs["n1"] = write("n1b.log", `{"msg":"raft: election won: term=2 tally=2"}`+"\npanic: boom\n")
	expect(t, checkLeaders(logs), false, "two-leaders")
	expect(t, checkCrashes(buildIndex(nil, 2), logs), false, "panic")
	ix := buildIndex([]Op{{Type: "info", F: "node-exit", Node: 1}}, 2)
	expect(t, checkCrashes(ix, map[string]string{}), false, "unexpected-exit")
}

func TestScheduleReplays(t *testing.T) {
	a := Schedule(42, 5, Families, 5*60e9, true)
	b := Schedule(42, 5, Families, 5*60e9, true)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("schedules of one seed differ in length: %d, %d", len(a), len(b))
	}
	for i := range a {
		if a[i].String() != b[i].String() || a[i].At != b[i].At || a[i].Dur != b[i].Dur {
			t.Fatalf("fault %d: %v at %v vs %v at %v", i, a[i], a[i].At, b[i], b[i].At)
		}
	}
	seen := map[string]bool{}
	for _, f := range Schedule(7, 5, Families, 75e9, true) {
		seen[f.Family] = true
	}
	for _, f := range Families {
		if !seen[f] {
			t.Errorf("short schedule misses family %s", f)
		}
	}
}

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		f, t string
		ok   bool
	}{{"q/#", "q/1", true}, {"q/+", "q/1", true}, {"q/+", "q/1/2", false}, {"h/0", "h/0", true}, {"h/0", "h/1", false}, {"#", "a", true}} {
		if topicMatch(c.f, c.t) != c.ok {
			t.Errorf("topicMatch(%q, %q) != %v", c.f, c.t, c.ok)
		}
	}
}
