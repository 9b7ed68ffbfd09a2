package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/store"
)

// startBrokers runs a broker on every node of c, each on its own loopback
// port, with the node as its cluster.
func startBrokers(t *testing.T, c *testCluster) []string {
	t.Helper()
	addrs := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		addrs[i] = startBroker(t, nd)
	}
	return addrs
}

// startBroker runs a broker with nd as its cluster and returns its address.
func startBroker(t *testing.T, nd *Node) string {
	t.Helper()
	addr, _ := startBrokerWith(t, nd, broker.Options{})
	return addr
}

// startBrokerWith is startBroker with opts (nd as its cluster).
func startBrokerWith(t *testing.T, nd *Node, opts broker.Options) (string, *broker.Server) {
	t.Helper()
	return startBrokerConfig(t, nd, broker.DefaultConfig(), opts)
}

// startBrokerConfig is startBrokerWith with a broker configuration.
func startBrokerConfig(t *testing.T, nd *Node, cfg broker.Config, opts broker.Options) (string, *broker.Server) {
	t.Helper()
	opts.Cluster = nd
	if opts.Logger == nil {
		opts.Logger = testLogger(t).With("node", nd.ID(), "part", "broker")
	}
	srv, err := broker.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	nd.AttachBroker(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return ln.Addr().String(), srv
}

// waitPeers waits until every node's transport knows the others.
func (c *testCluster) waitPeers() {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		for _, nd := range c.nodes {
			if nd != nil && len(nd.peerIDs()) != len(c.nodes)-1 {
				return fmt.Errorf("%s knows %d peers", nd.ID(), len(nd.peerIDs()))
			}
		}
		return nil
	})
}

// brokerCluster starts three nodes, waits for a leader and for every
// node's transport to know its peers, and runs a broker on each.
func brokerCluster(t *testing.T, opts ...func(*Config)) (*testCluster, []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := newCluster(t, 3, opts...)
	c.leader(10 * time.Second)
	c.waitPeers()
	return c, startBrokers(t, c)
}

type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dial(t *testing.T, addr, id string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 0}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *client) expect(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

// A message published on one node reaches subscribers on the other nodes,
// once per subscriber, with its QoS and 5.0 properties; the SUBACK means
// the route is in force everywhere, and an UNSUBACK that it is gone.
func TestPublishReachesOtherNodes(t *testing.T) {
	c, addrs := brokerCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	sub1 := dial(t, addrs[1], "sub-on-1")
	sub2 := dial(t, addrs[2], "sub-on-2")
	for _, s := range []*client{sub1, sub2} {
		sa, err := s.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cross/#", QoS: 2}}})
		if err != nil || sa.Reasons[0] != 2 {
			t.Fatalf("subscribe: %v %+v", err, sa)
		}
	}
	pub := dial(t, addrs[0], "pub-on-0")
	for qos := byte(0); qos <= 2; qos++ {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("cross/q%d", qos), QoS: qos, Payload: []byte("hello"),
			Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}}); err != nil {
			t.Fatalf("publish QoS %d: %v", qos, err)
		}
		for _, s := range []*client{sub1, sub2} {
			m := s.expect(t)
			if m.Topic != fmt.Sprintf("cross/q%d", qos) || m.QoS != qos || string(m.Payload) != "hello" ||
				m.Properties.ContentType != "text/plain" || len(m.Properties.User) != 1 {
				t.Fatalf("got %q QoS %d %q %+v", m.Topic, m.QoS, m.Payload, m.Properties)
			}
		}
	}
	for _, s := range []*client{sub1, sub2} {
		select {
		case m := <-s.msgs:
			t.Fatalf("a second copy of %q", m.Topic)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// After the UNSUBACK the route is gone everywhere: node 2's subscriber
	// stops receiving, node 1's still does.
	if _, err := sub2.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"cross/#"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		for _, nd := range c.nodes {
			if r, ok := nd.FSM().Route("cross/#", ""); ok {
				for _, rn := range r.Nodes {
					if rn.NodeID == "node-2" {
						return fmt.Errorf("%s still routes cross/# to node-2", nd.ID())
					}
				}
			}
		}
		return nil
	})
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "cross/after", QoS: 1, Payload: []byte("once more")}); err != nil {
		t.Fatal(err)
	}
	if m := sub1.expect(t); m.Topic != "cross/after" {
		t.Fatalf("got %q", m.Topic)
	}
	select {
	case m := <-sub2.msgs:
		t.Fatalf("unsubscribed client got %q", m.Topic)
	case <-time.After(300 * time.Millisecond):
	}
}

// Retained messages are identical on every node after sets, replacements
// and deletes made on different nodes, and after a node restarts on its
// data directory.
func TestRetainedIdenticalOnEveryNode(t *testing.T) {
	c, addrs := brokerCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pubs := make([]*client, 3)
	for i := range pubs {
		pubs[i] = dial(t, addrs[i], fmt.Sprintf("pub-%d", i))
	}
	for _, p := range []struct {
		node           int
		topic, payload string
	}{{0, "r/a", "one"}, {1, "r/a", "two"}, {2, "r/b", "bee"}, {0, "r/b", ""}, {1, "r/c", "sea"}} {
		pa, err := pubs[p.node].Publish(ctx, &paho.Publish{Topic: p.topic, QoS: 1, Retain: true, Payload: []byte(p.payload)})
		if err != nil || pa.ReasonCode != 0 {
			t.Fatalf("retained publish %s on node %d: %v %+v", p.topic, p.node, err, pa)
		}
	}
	read := func(addr, id string) string {
		r := dial(t, addr, id)
		if _, err := r.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "r/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		got := ""
		for range 2 {
			m := r.expect(t)
			if !m.Retain {
				t.Fatalf("%s: %q arrived without RETAIN", id, m.Topic)
			}
			got += m.Topic + "=" + string(m.Payload) + " "
		}
		select {
		case m := <-r.msgs:
			t.Fatalf("%s: unexpected %q=%q", id, m.Topic, m.Payload)
		case <-time.After(200 * time.Millisecond):
		}
		return got
	}
	want := "r/a=two r/c=sea "
	for i, a := range addrs {
		if got := read(a, fmt.Sprintf("reader-%d", i)); got != want {
			t.Fatalf("node %d retained: %q, want %q", i, got, want)
		}
	}
	c.kill(2)
	c.restart(2)
	addr := startBroker(t, c.nodes[2])
	// It catches up once the leader reaches it again (its old incarnation
	// must be declared dead in gossip first).
	eventually(t, 30*time.Second, func() error {
		if len(c.nodes[2].Retained("r/#")) != 2 {
			return fmt.Errorf("restarted node has %d retained messages", len(c.nodes[2].Retained("r/#")))
		}
		return nil
	})
	if got := read(addr, "reader-after-restart"); got != want {
		t.Fatalf("after restart: %q, want %q", got, want)
	}
}

// A node left in a minority refuses what needs Raft within a bounded time,
// with the proper reason code (SUBACK 0x83, retained PUBLISH acknowledged
// with 0x83), while its existing local traffic keeps flowing.
func TestMinorityRefusesRaftOperationsKeepsLocalTraffic(t *testing.T) {
	c, addrs := brokerCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	local := dial(t, addrs[0], "local-sub")
	if sa, err := local.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "local/#", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe with quorum: %v %+v", err, sa)
	}
	pub := dial(t, addrs[0], "local-pub")

	c.kill(1)
	c.kill(2)

	late := dial(t, addrs[0], "late-sub")
	start := time.Now()
	sa, err := late.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "new/#", QoS: 1}}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if sa.Reasons[0] != 0x83 {
		t.Fatalf("SUBACK in a minority: 0x%02X, want 0x83", sa.Reasons[0])
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Fatalf("SUBACK took %v", d)
	}
	pa, err := pub.Publish(ctx, &paho.Publish{Topic: "local/retained", QoS: 1, Retain: true, Payload: []byte("r")})
	if err != nil && pa == nil {
		t.Fatal(err)
	}
	if pa.ReasonCode != 0x83 {
		t.Fatalf("retained PUBLISH in a minority acknowledged with 0x%02X, want 0x83", pa.ReasonCode)
	}
	if m := local.expect(t); m.Topic != "local/retained" {
		t.Fatalf("got %q", m.Topic)
	}
	// A 3.1.1 retained PUBLISH that the cluster cannot record is not
	// acknowledged: 3.1.1 has no reason code, so the connection closes and
	// the client will send it again.
	assertV311RetainedRefused(t, addrs[0])
	// A persistent session cannot be claimed without a quorum: CONNACK
	// 0x88 server unavailable, within the cluster timeout.
	start = time.Now()
	if _, ack := rawConnect(t, addrs[0], "persistent-in-minority", newDeviceState(), false, 600); ack.ReasonCode != packet.ServerUnavailable {
		t.Fatalf("persistent CONNECT in a minority: CONNACK %#x, want 0x88", byte(ack.ReasonCode))
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Fatalf("CONNACK took %v", d)
	}
	// Plain local traffic flows as before.
	if pa, err := pub.Publish(ctx, &paho.Publish{Topic: "local/plain", QoS: 1, Payload: []byte("p")}); err != nil || pa.ReasonCode != 0 {
		t.Fatalf("local publish in a minority: %v %+v", err, pa)
	}
	if m := local.expect(t); m.Topic != "local/plain" {
		t.Fatalf("got %q", m.Topic)
	}
}

// A QoS 1 publish whose matching route is on a node that cannot be reached
// waits, is retried, and then fails visibly: the 5.0 PUBACK says 0x80 and
// the failure is counted — it never vanishes as a success.
func TestPublishToUnreachableNodeFailsVisibly(t *testing.T) {
	c, addrs := brokerCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	far := dial(t, addrs[2], "far-sub")
	if sa, err := far.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "far/#", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe: %v %+v", err, sa)
	}
	c.kill(2)
	pub := dial(t, addrs[0], "pub")
	start := time.Now()
	pa, err := pub.Publish(ctx, &paho.Publish{Topic: "far/x", QoS: 1, Payload: []byte("undeliverable")})
	if err != nil && pa == nil {
		t.Fatal(err)
	}
	if pa.ReasonCode != 0x80 {
		t.Fatalf("PUBACK 0x%02X after %v, want 0x80", pa.ReasonCode, time.Since(start))
	}
	t.Logf("PUBACK 0x80 after %v", time.Since(start))

	// A 3.1.1 PUBACK cannot carry 0x80: the connection closes instead of
	// acknowledging, so the client sends the message again later.
	nc, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	write := func(p packet.Packet) {
		b, err := p.Append(nil, packet.V311)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	rd := packet.NewReader(nc, 1<<20)
	rd.SetVersion(packet.V311)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	write(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 60, ClientID: "pub311"})
	if pk, err := rd.ReadPacket(); err != nil {
		t.Fatal(err)
	} else if ca, ok := pk.(*packet.Connack); !ok || ca.ReasonCode != 0 {
		t.Fatalf("CONNACK: %#v", pk)
	}
	write(&packet.Publish{Topic: "far/y", QoS: 1, PacketID: 7, Payload: []byte("undeliverable")})
	start = time.Now()
	pk, err := rd.ReadPacket()
	if err == nil {
		t.Fatalf("3.1.1 publisher got %#v after %v, want the connection closed without a PUBACK", pk, time.Since(start))
	}
	t.Logf("3.1.1 connection closed after %v (%v)", time.Since(start), err)
}

// After a crash, the routes of the clean sessions that died with the node
// are removed when it comes back and reconciles; routes of its live
// subscriptions are (re)added.
func TestRestartReconcilesRoutes(t *testing.T) {
	c, addrs := brokerCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	doomed := dial(t, addrs[2], "doomed")
	if _, err := doomed.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "stale/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	routed := func(filter string) bool {
		r, ok := c.nodes[0].FSM().Route(filter, "")
		if !ok {
			return false
		}
		for _, rn := range r.Nodes {
			if rn.NodeID == "node-2" {
				return true
			}
		}
		return false
	}
	eventually(t, 5*time.Second, func() error {
		if !routed("stale/#") {
			return fmt.Errorf("no route yet")
		}
		return nil
	})
	// node-2 crashes: its process, broker and clean sessions are gone.
	c.kill(2)
	c.restart(2)
	addr := startBroker(t, c.nodes[2])
	eventually(t, 30*time.Second, func() error {
		if !c.nodes[2].inContact() {
			return fmt.Errorf("the restarted node has not heard from a leader")
		}
		return nil
	})
	// The node learns, as it catches up, that the cluster took it for
	// dead, and closes the connections it had then: subscribe until one
	// holds.
	eventually(t, 15*time.Second, func() error {
		fresh := dial(t, addr, "fresh")
		_, err := fresh.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "fresh/#", QoS: 1}}})
		return err
	})
	if err := c.nodes[2].ReconcileRoutes(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if routed("stale/#") {
			return fmt.Errorf("the dead session's route is still there")
		}
		if !routed("fresh/#") {
			return fmt.Errorf("the live subscription has no route")
		}
		return nil
	})
}

func assertV311RetainedRefused(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	write := func(p packet.Packet) {
		b, err := p.Append(nil, packet.V311)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(b)
	}
	write(&packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: "v311-retainer"})
	rd := packet.NewReader(nc, 1<<20)
	rd.SetVersion(packet.V311)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if pk, err := rd.ReadPacket(); err != nil || pk.Type() != packet.CONNACK {
		t.Fatalf("3.1.1 connect: %v %v", pk, err)
	}
	write(&packet.Publish{QoS: 1, Retain: true, Topic: "local/v311", PacketID: 1, Payload: []byte("r")})
	pk, err := rd.ReadPacket()
	if err == nil {
		t.Fatalf("3.1.1 retained PUBLISH in a minority answered with %v, want the connection closed", pk.Type())
	}
}

// A node killed while it held an offline session comes back after the
// cluster gave the session to another node: what it had queued for the
// session (on its disk) goes to the new owner, not away, and — with
// cluster.session_hold set — ahead of what was published for the session
// meanwhile. The client, reconnected to the new owner before the node is
// back, gets nothing newer first: each publisher's messages in order
// ([MQTT-4.6.0-6]), across the move.
// storedBroker runs on nd a broker whose store is dir/sessions.db, in place
// of the one it had: started again on the same dir, it restores what the
// previous one stored.
func storedBroker(t *testing.T, nd *Node, dir string) (string, *broker.Server) {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "sessions.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the broker's Close (cleanups run last first)
	return startBrokerWith(t, nd, broker.Options{Store: st})
}

func TestRestartHandsOnRestoredSessionsThatMoved(t *testing.T) {
	c, addrs := brokerCluster(t, func(cfg *Config) { cfg.SessionHold = 30 * time.Second })
	dir := t.TempDir()
	// Node 2 runs a broker with a store (the one startBrokers gave it is
	// replaced).
	addr2, srv2 := storedBroker(t, c.nodes[2], dir)
	dev := offlineSession(t, addr2, "restored", "restored/#", 2)
	pub := dial(t, addrs[0], "restored-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "restored/x", QoS: 2, Payload: []byte(fmt.Sprintf("s-%04d", i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 10)
	// Node 2 dies with the session's queue on its disk; the cluster gives
	// the session to a live node, which queues what is published now.
	closeCtx, cancelClose := context.WithTimeout(ctx, 5*time.Second)
	srv2.Close(closeCtx)
	cancelClose()
	c.kill(2)
	var owner string
	eventually(t, 30*time.Second, func() error {
		s, _ := c.nodes[0].FSM().Session("restored")
		if s.Owner == "" || s.Owner == "node-2" {
			return fmt.Errorf("owner %q", s.Owner)
		}
		if !slices.Equal(s.Holders, []string{"node-2"}) {
			return fmt.Errorf("holders %v, want [node-2]", s.Holders)
		}
		owner = addrs[0]
		if s.Owner == "node-1" {
			owner = addrs[1]
		}
		return nil
	})
	// Publishes reach the new owner alone once the dead node's route is
	// gone (it stays until the new owner routes the session).
	waitNoRoutes(t, c.nodes[0].FSM(), "node-2")
	publish(10, 20)
	b, ack := rawConnect(t, owner, "restored", dev, false, 600)
	if !ack.SessionPresent {
		t.Fatal("CONNACK: session present 0, want 1")
	}
	time.Sleep(time.Second)
	if got, _ := dev.deliveries(); len(got) != 0 {
		t.Fatalf("delivered before the older messages on the dead node: %v", got)
	}
	// It comes back on its data directory, catches up, and hands the
	// queue on: what it restored, QoS 2 included, although the claim came
	// before its start (dropCopies leaves out only what a copy collected
	// since).
	s, _ := c.nodes[0].FSM().Session("restored")
	time.Sleep(time.Until(time.UnixMilli(s.ClaimedAtUnixMs).Add(claimSkew + 100*time.Millisecond)))
	c.restart(2)
	storedBroker(t, c.nodes[2], dir)
	waitDeliveries(t, dev, "s", 20)
	eventually(t, 10*time.Second, func() error {
		if s, _ := c.nodes[0].FSM().Session("restored"); len(s.Holders) != 0 {
			return fmt.Errorf("holders %v after the hand-on", s.Holders)
		}
		return nil
	})
	b.disconnect()
}

// A copy of a session that another node claimed before this node started
// (a node restarted on its data directory while the cluster had given its
// session away) hands on the QoS 1 messages it collected since, but not
// the QoS 2 ones: the owner routed those to itself all along, and should
// the session come back here without the owner's record of what it
// delivered (that node dead), they would reach the client twice
// ([MQTT-4.3.3-2]; 85 duplicates in a jepsen-lite kill run). Here the
// claim is dated before node 1 started.
func TestCopyCollectedSinceStartHandsOnNoQoS2Copies(t *testing.T) {
	c, addrs := brokerCluster(t)
	dev := offlineSession(t, addrs[1], "copy", "copy/#", 2)
	waitOwner(t, c, "copy", "node-1")
	pub := dial(t, addrs[0], "copy-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 6 {
		qos := byte(1 + i%2)
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "copy/x", QoS: qos, Payload: []byte(fmt.Sprintf("q%d-%d", qos, i))}); err != nil {
			t.Fatal(err)
		}
	}
	b1 := c.nodes[1].brk.Load()
	before := b1.Stats().PassOnFailures.Load()
	claimAt(t, c, "copy", 0, b1.StartedAt().Add(-time.Hour))
	eventually(t, 10*time.Second, func() error {
		if b1.HasSession("copy") {
			return fmt.Errorf("node 1 still holds its copy")
		}
		return nil
	})
	if n := b1.Stats().PassOnFailures.Load() - before; n != 3 {
		t.Errorf("node 1 left out %d messages, want the 3 QoS 2 ones", n)
	}
	cl, ack := rawConnect(t, addrs[0], "copy", dev, false, 600)
	defer cl.disconnect()
	if !ack.SessionPresent {
		t.Fatal("CONNACK: session present 0 at the owner")
	}
	eventually(t, 10*time.Second, func() error {
		if got, _ := dev.deliveries(); len(got) < 3 {
			return fmt.Errorf("got %v, want q1-0, q1-2, q1-4", got)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	got, _ := dev.deliveries()
	for i := range 6 {
		p := fmt.Sprintf("q%d-%d", 1+i%2, i)
		if want := 1 - i%2; got[p] != want {
			t.Errorf("%s delivered %d times, want %d", p, got[p], want)
		}
	}
}

// A node that dies keeps, in the cluster's routes, the subscriptions of its
// persistent sessions until the node that takes each session routes them
// itself: at no moment does a publish for a subscribed session find no
// route at all (it would be acknowledged for nobody and lost); it fails at
// the dead node instead, and the publisher sends it again.
func TestDeadNodesRoutesStayUntilItsSessionsAreRoutedElsewhere(t *testing.T) {
	c, addrs := brokerCluster(t)
	offlineSession(t, addrs[2], "dead-routes", "dead/#", 1)
	waitOwner(t, c, "dead-routes", "node-2")
	f := c.nodes[0].FSM()
	routed := func(node string) bool {
		for _, r := range f.RoutesOf(node) {
			if r.Filter == "dead/#" {
				return true
			}
		}
		return false
	}
	c.kill(2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, _ := f.Session("dead-routes")
		dead, owner := routed("node-2"), s.Owner != "node-2" && s.Owner != "" && routed(s.Owner)
		if !dead && !owner {
			t.Fatalf("no node routes dead/# for the session (owner %q)", s.Owner)
		}
		if !dead && owner {
			return // the session's new node routes it, the dead node no longer does
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: dead node routes dead/#: %v, owner %q routes it: %v", dead, s.Owner, owner)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A node the cluster took for dead gives back the routes its own sessions
// need, and not those of a copy it still holds of a session the cluster
// gave to another node meanwhile: that copy would collect the session's
// messages a second time and hand them on to where the session lives (180
// QoS 2 duplicates in a jepsen-lite run, from a node back from a pause).
func TestHealedRoutesLeaveOutCopiesOfSessionsLivingElsewhere(t *testing.T) {
	c, addrs := brokerCluster(t)
	offlineSession(t, addrs[0], "heal-copy", "copy/#", 2)
	offlineSession(t, addrs[0], "heal-own", "own/#", 1)
	f := c.nodes[0].FSM()
	waitRouted(t, f, "node-0", "copy/#")
	waitRouted(t, f, "node-0", "own/#")

	// node-1 claims heal-copy without node-0 (as across a partition), and
	// the leader drops node-0's routes (as for a node it took for dead).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx := lateClaim(t, c, "heal-copy", 1)
	for _, cmd := range [][]byte{routeCmd(t, "node-0", "copy/#", 0), routeCmd(t, "node-0", "own/#", 0)} {
		var err error
		if idx, err = c.nodes[1].Propose(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.WaitApplied(ctx, idx); err != nil { // node-0 has applied all three
		t.Fatal(err)
	}
	if !c.nodes[0].brk.Load().HasSession("heal-copy") {
		t.Fatal("node-0 no longer holds its copy of heal-copy: nothing to show")
	}

	c.nodes[0].healRoutes()
	waitRouted(t, f, "node-0", "own/#")
	for _, r := range f.RoutesOf("node-0") {
		if r.Filter == "copy/#" {
			t.Fatal("node-0 routes copy/# again for its copy of a session node-1 owns")
		}
	}
}

// A node that hears from no leader for the contact lease, and reaches no
// majority, closes the connections whose wills the cluster holds, and
// keeps the others, those of persistent sessions included: the other side
// of a partition publishes those wills (jepsen-lite: wills published for
// connections that went on to end normally on a node cut off in a
// minority).
func TestNodeOutOfContactClosesConnectionsWithWills(t *testing.T) {
	c, addrs := brokerCluster(t, func(cfg *Config) { cfg.ContactLease = time.Second })
	lone := 2
	if c.leader(5*time.Second) == c.nodes[2] {
		lone = 1
	}
	addr := addrs[lone]
	withWill, _ := rawConnectOpts(t, addr, "lease-will", newDeviceState(), func(cp *packet.Connect) {
		cp.Will = &packet.Will{Topic: "will/lease", Payload: []byte("gone"), QoS: 1}
	})
	persistent, _ := rawConnect(t, addr, "lease-persistent", newDeviceState(), true, 600)
	plainDev := newDeviceState()
	plain, _ := rawConnect(t, addr, "lease-plain", plainDev, true, 0)
	plain.subscribe("lease/plain", 0)
	eventually(t, 5*time.Second, func() error {
		for _, w := range c.nodes[lone].FSM().WillsOf(c.nodes[lone].ID()) {
			if w.ClientID == "lease-will" && c.nodes[lone].willInCluster(w.ID) {
				return nil
			}
		}
		return fmt.Errorf("will of lease-will not committed yet")
	})
	// While the node hears from its leader, nothing is closed.
	for _, rc := range []*rawConn{withWill, persistent, plain} {
		select {
		case <-rc.done:
			t.Fatal("a connection closed while the node was in contact")
		default:
		}
	}

	// The leader dies: the node still reaches a majority (itself and the
	// third node), which elects another; its connections stay however long
	// that takes.
	leader := slices.IndexFunc(c.nodes, func(nd *Node) bool { return nd != nil && nd.IsLeader() })
	c.kill(leader)
	time.Sleep(3 * time.Second)
	for _, rc := range []*rawConn{withWill, persistent, plain} {
		select {
		case <-rc.done:
			t.Fatal("a connection closed while the node reached a majority")
		default:
		}
	}
	// Now it is alone.
	for i := range c.nodes {
		if i != lone && c.nodes[i] != nil {
			c.kill(i)
		}
	}
	select {
	case code := <-withWill.disc:
		if code != packet.UseAnotherServer {
			t.Fatalf("connection with a will: DISCONNECT %v, want 0x9C use another server", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection with a will still open 10 s after the node lost its leader (lease 1 s)")
	}
	// The others stay, and local traffic flows.
	plain.write(&packet.Publish{Topic: "lease/plain", Payload: []byte("local")})
	eventually(t, 5*time.Second, func() error {
		if got, _ := plainDev.deliveries(); got["local"] != 1 {
			return fmt.Errorf("local QoS 0 message not delivered on the remaining connection")
		}
		return nil
	})
	for name, rc := range map[string]*rawConn{"without a will": plain, "of a persistent session": persistent} {
		select {
		case <-rc.done:
			t.Fatalf("the connection %s was closed", name)
		default:
		}
	}
}

// A session that resumes on another node while the node with QoS 2
// messages in flight to its client is down gives new messages packet ids
// apart from the ones that node used: the client still holds those ids
// (PUBREC sent, no PUBREL yet) and takes a PUBLISH under one of them as
// the message it already has ([MQTT-4.3.3-9]). Had the new node started at
// id 1 like the dead one, the client would have dropped the new messages
// as duplicates, completed their flows, and taken the old ones, handed on
// when their node was back, as new (delivered twice: 10 QoS 2 duplicates
// in a jepsen-lite kill run).
func TestSessionResumedWithoutItsNodeGivesOtherPacketIDs(t *testing.T) {
	c, addrs := brokerCluster(t, func(cfg *Config) { cfg.SessionHold = time.Second })
	dir := t.TempDir()
	addr2, srv2 := storedBroker(t, c.nodes[2], dir)
	dev := newDeviceState()
	cl, _ := rawConnect(t, addr2, "ids", dev, true, 600)
	cl.subscribe("ids/#", 2)
	waitRouted(t, c.nodes[0].FSM(), "node-2", "ids/#")
	dev.mu.Lock()
	dev.unacked = 3 // delivered, but their PUBRECs never reach node 2
	dev.mu.Unlock()
	pub := dial(t, addrs[0], "ids-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(prefix string) {
		for i := range 3 {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "ids/x", QoS: 2, Payload: []byte(fmt.Sprintf("%s-%04d", prefix, i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("old")
	waitDeliveries(t, dev, "old", 3)
	closeCtx, cancelClose := context.WithTimeout(ctx, 5*time.Second)
	srv2.Close(closeCtx)
	cancelClose()
	c.kill(2)
	var owner string
	eventually(t, 30*time.Second, func() error {
		s, _ := c.nodes[0].FSM().Session("ids")
		if s.Owner == "" || s.Owner == "node-2" {
			return fmt.Errorf("owner %q", s.Owner)
		}
		owner = addrs[0]
		if s.Owner == "node-1" {
			owner = addrs[1]
		}
		return nil
	})
	waitNoRoutes(t, c.nodes[0].FSM(), "node-2")
	// The client resumes at the new owner, which has none of node 2's
	// state; its hold ends while node 2 is still down, and it sends the
	// new messages.
	b, ack := rawConnect(t, owner, "ids", dev, false, 600)
	defer b.disconnect()
	if !ack.SessionPresent {
		t.Fatal("CONNACK: session present 0, want 1")
	}
	publish("new")
	waitDeliveries(t, dev, "new", 3)
	// Node 2 comes back on its data directory and hands its in-flight
	// messages on; the owner sends them again with DUP.
	c.restart(2)
	storedBroker(t, c.nodes[2], dir)
	eventually(t, 30*time.Second, func() error {
		if s, _ := c.nodes[0].FSM().Session("ids"); len(s.Holders) != 0 {
			return fmt.Errorf("holders %v", s.Holders)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	got, _ := dev.deliveries()
	for _, prefix := range []string{"old", "new"} {
		for i := range 3 {
			if p := fmt.Sprintf("%s-%04d", prefix, i); got[p] != 1 {
				t.Errorf("%s delivered %d times, want once ([MQTT-4.3.3-2])", p, got[p])
			}
		}
	}
}
