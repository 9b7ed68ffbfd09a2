package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
)

// handedMsgs are n QoS 1 deliveries for a session, as node "node-2"
// received them (ids far from those its clients' messages get), payloads
// prefix-0000...
func handedMsgs(prefix string, n int) []broker.SessionDelivery {
	ds := make([]broker.SessionDelivery, n)
	for i := range ds {
		m := &broker.Message{Topic: fmt.Sprintf("%s/%d", prefix, i), Payload: []byte(fmt.Sprintf("%s-%04d", prefix, i)),
			QoS: 1, ID: 1<<40 + uint64(i), Node: "node-2"}
		ds[i] = broker.SessionDelivery{Msg: m, QoS: 1}
	}
	return ds
}

// passOnAll passes ds on from node `from` to the session of id at node
// `to`, as a node that believes `to` owns it does, and returns once `to`
// acknowledged them all.
func passOnAll(t *testing.T, c *testCluster, from, to int, id string, ds []broker.SessionDelivery, hops uint32) {
	t.Helper()
	errs := make(chan error, len(ds))
	for _, d := range ds {
		c.nodes[from].passOn(c.nodes[to].ID(), id, d, hops, func(err error) { errs <- err })
	}
	for range ds {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("pass-on to node %d: %v", to, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("pass-on to node %d not acknowledged", to)
		}
	}
}

// A node that is handed messages for a session it does not hold, while
// the cluster records another node as the session's owner (the sender's
// view was older, or newer, than the owner's latest move), passes them on
// to that owner instead of dropping them: the sender counts them as
// delivered once it is acknowledged (jepsen-lite: over a thousand handed-on
// messages of the 8 s subscriber were dropped so in one run).
func TestHandedOnMessagesFollowTheOwnerTheClusterRecords(t *testing.T) {
	c, addrs := brokerCluster(t)
	dev := offlineSession(t, addrs[0], "kept", "kept/#", 1)
	waitOwner(t, c, "kept", "node-0")
	before := c.nodes[1].brk.Load().Stats().PassOnFailures.Load()
	passOnAll(t, c, 2, 1, "kept", handedMsgs("kept", 5), 0)
	if c.nodes[1].brk.Load().HasSession("kept") {
		t.Error("node 1 installed a session the cluster records at node 0")
	}
	b, ack := rawConnect(t, addrs[0], "kept", dev, false, 600)
	defer b.disconnect()
	if !ack.SessionPresent {
		t.Fatal("CONNACK: session present 0 at the session's owner")
	}
	eventually(t, 10*time.Second, func() error {
		got, _ := dev.deliveries()
		for i := range 5 {
			if w := fmt.Sprintf("kept-%04d", i); got[w] == 0 {
				return fmt.Errorf("%s not delivered (got %v)", w, got)
			}
		}
		return nil
	})
	if n := c.nodes[1].brk.Load().Stats().PassOnFailures.Load() - before; n != 0 {
		t.Errorf("node 1 counted %d messages it could not pass on", n)
	}
}

// Two nodes whose states disagree cannot send handed-on messages back and
// forth for ever: one passed on handOnHops times already is dropped, and
// counted, by a node that does not hold its session.
func TestHandedOnMessagesArePassedOnABoundedNumberOfTimes(t *testing.T) {
	c, addrs := brokerCluster(t)
	offlineSession(t, addrs[0], "bounced", "bounced/#", 1)
	waitOwner(t, c, "bounced", "node-0")
	before := c.nodes[1].brk.Load().Stats().PassOnFailures.Load()
	passOnAll(t, c, 2, 1, "bounced", handedMsgs("bounced", 2), handOnHops)
	if n := c.nodes[1].brk.Load().Stats().PassOnFailures.Load() - before; n != 2 {
		t.Errorf("node 1 counted %d messages it could not pass on, want 2", n)
	}
}

// A node that is handed messages for a session before it applied the
// claim that made it the owner (its state lags the sender's) waits for
// that claim and takes them, instead of dropping them because it knows
// no such session yet.
func TestHandedOnMessagesWaitForTheClaimTheSenderSaw(t *testing.T) {
	c, addrs := brokerCluster(t)
	n1 := c.nodes[1]
	// Node 1 as new as the leader, and the cluster idle: the next command
	// is the claim.
	eventually(t, 5*time.Second, func() error {
		i0 := c.nodes[0].FSM().AppliedIndex()
		time.Sleep(300 * time.Millisecond)
		if i1 := n1.FSM().AppliedIndex(); i1 != i0 || c.nodes[0].FSM().AppliedIndex() != i0 {
			return fmt.Errorf("node 1 at %d, leader at %d", i1, i0)
		}
		return nil
	})
	h := &handedOn{ds: handedMsgs("early", 3), index: n1.FSM().AppliedIndex() + 1}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n1.takeHandedOn(ctx, n1.brk.Load(), "early", h)
	}()
	time.Sleep(100 * time.Millisecond) // waiting, the session unknown everywhere
	lateClaim(t, c, "early", 1)
	if err := <-done; err != nil {
		t.Fatalf("takeHandedOn: %v", err)
	}
	dev := newDeviceState()
	b, ack := rawConnect(t, addrs[1], "early", dev, false, 600)
	defer b.disconnect()
	if !ack.SessionPresent {
		t.Fatal("CONNACK: session present 0")
	}
	eventually(t, 10*time.Second, func() error {
		if got, _ := dev.deliveries(); len(got) != 3 {
			return fmt.Errorf("got %v, want early-0000..0002", got)
		}
		return nil
	})
}

// A burst of pass-ons for one session makes one log line with its count,
// not one per batch; another session gets its own line.
func TestSparseLogLetsOneLinePerSessionThrough(t *testing.T) {
	var l sparseLog
	if k := l.add("a", 1); k != 1 {
		t.Errorf("first pass-on of a: log %d, want 1", k)
	}
	if k := l.add("a", 2); k != 0 {
		t.Errorf("second pass-on of a at once: log %d, want none", k)
	}
	if k := l.add("b", 3); k != 3 {
		t.Errorf("first pass-on of b: log %d, want 3", k)
	}
	l.mu.Lock()
	c := l.last["a"]
	c.at = c.at.Add(-sparseLogEvery)
	l.last["a"] = c
	l.mu.Unlock()
	if k := l.add("a", 1); k != 3 {
		t.Errorf("pass-on of a after the quiet time: log %d, want the 3 since the last line", k)
	}
}
