package broker

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/broker/packet"
)

func persistentV5(expiry uint32) func(*paho.Connect, *paho.ClientConfig) {
	return func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
}

// A persistent session keeps its subscriptions and queues what is published
// while its client is away ([MQTT-3.1.2-5], [MQTT-4.1.0-1]); Session Present
// tells the client ([MQTT-3.2.2-2]).
func TestSessionResumeV5(t *testing.T) {
	s := startServer(t, nil)
	c := dialV5(t, s.addr, "keeper", persistentV5(600))
	if c.connack.SessionPresent {
		t.Fatal("first connect: session present")
	}
	c.subscribe(t, paho.SubscribeOptions{Topic: "q/#", QoS: 2})
	c.Disconnect(&paho.Disconnect{})
	pub := dialV5(t, s.addr, "pub")
	for i := 0; i < 20; i++ {
		pub.publish(t, &paho.Publish{Topic: "q/x", QoS: byte(1 + i%2), Payload: []byte(fmt.Sprint(i))})
	}
	c2 := dialV5(t, s.addr, "keeper", persistentV5(600))
	if !c2.connack.SessionPresent {
		t.Fatal("resumed connect: session present is 0")
	}
	for i := 0; i < 20; i++ {
		m := c2.expect(t)
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q (order must be kept, [MQTT-4.6.0-6])", i, m.Payload)
		}
	}
	c2.expectNone(t, 200*time.Millisecond)
}

// 3.1.1 clean session 0 keeps the session; clean session 1 discards it.
func TestSessionResumeV311(t *testing.T) {
	s := startServer(t, nil)
	c := dialV3(t, s.addr, "keeper3", false)
	c.sub(t, "q3/#", 1)
	c.Disconnect(50)
	pub := dialV3(t, s.addr, "pub3", true)
	pub.pub(t, "q3/a", 1, false, "while away")
	c2 := dialV3(t, s.addr, "keeper3", false)
	if m := c2.expect(t); string(m.Payload()) != "while away" {
		t.Fatalf("got %q", m.Payload())
	}
	c2.Disconnect(50)
	// Clean session 1 ends it: nothing queued, no subscription left.
	c3 := dialV3(t, s.addr, "keeper3", true)
	c3.Disconnect(50)
	pub.pub(t, "q3/b", 1, false, "nobody")
	c4 := dialV3(t, s.addr, "keeper3", false)
	select {
	case m := <-c4.msgs:
		t.Fatalf("clean session left a subscription: %q", m.Payload())
	case <-time.After(200 * time.Millisecond):
	}
}

// A session expires its interval after the disconnect ([MQTT-3.1.2-23]), and
// the expiry set at DISCONNECT applies ([MQTT-3.14.2-...]).
func TestSessionExpirySetAtDisconnect(t *testing.T) {
	s := startServer(t, nil)
	c := dialV5(t, s.addr, "short", persistentV5(600))
	c.subscribe(t, paho.SubscribeOptions{Topic: "s/#", QoS: 1})
	one := uint32(1)
	c.Disconnect(&paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: &one}})
	eventually(t, 5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.sessions["short"]; ok {
			return fmt.Errorf("session still present")
		}
		return nil
	})
	c2 := dialV5(t, s.addr, "short", persistentV5(600))
	if c2.connack.SessionPresent {
		t.Fatal("expired session reported present")
	}
}

// Takeover: the old connection gets DISCONNECT 0x8E ([MQTT-3.1.4-3]) and the
// session continues on the new one.
func TestTakeover(t *testing.T) {
	s := startServer(t, nil)
	old := dialV5(t, s.addr, "dup", persistentV5(600))
	old.subscribe(t, paho.SubscribeOptions{Topic: "t/#", QoS: 1})
	nu := dialV5(t, s.addr, "dup", persistentV5(600))
	select {
	case d := <-old.disconnects:
		if d.ReasonCode != byte(packet.SessionTakenOver) {
			t.Fatalf("old connection got DISCONNECT 0x%02X, want 0x8E", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old connection got no DISCONNECT")
	}
	if !nu.connack.SessionPresent {
		t.Fatal("takeover with clean start 0: session not present")
	}
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "t/1", QoS: 1, Payload: []byte("after")})
	if m := nu.expect(t); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	}
}

// A storm of connects with one client id leaves exactly one session and no
// leaked connections (BAD-INPUT row 26).
func TestTakeoverStorm(t *testing.T) {
	s := startServer(t, nil)
	for i := 0; i < 50; i++ {
		c, err := tryDialV5(s.addr, "storm")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Disconnect(&paho.Disconnect{})
	}
	eventually(t, 5*time.Second, func() error {
		if n := s.stats.Connected.Load(); n != 1 {
			return fmt.Errorf("%d connected", n)
		}
		return nil
	})
}

// Retained messages: set, replace, delete by empty payload ([MQTT-3.3.1-5..7],
// [MQTT-3.3.1-10]); Retain Handling 0/1/2 ([MQTT-3.3.1-9..11]).
func TestRetained(t *testing.T) {
	s := startServer(t, nil)
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "r/a", QoS: 1, Retain: true, Payload: []byte("one")})
	pub.publish(t, &paho.Publish{Topic: "r/a", QoS: 1, Retain: true, Payload: []byte("two")})
	pub.publish(t, &paho.Publish{Topic: "r/b", QoS: 1, Retain: true, Payload: []byte("bee")})
	pub.publish(t, &paho.Publish{Topic: "r/b", QoS: 1, Retain: true, Payload: nil})

	c := dialV5(t, s.addr, "reader")
	c.subscribe(t, paho.SubscribeOptions{Topic: "r/#", QoS: 1})
	m := c.expect(t)
	if m.Topic != "r/a" || string(m.Payload) != "two" || !m.Retain {
		t.Fatalf("got %q %q retain=%v; want the replacement, with RETAIN 1", m.Topic, m.Payload, m.Retain)
	}
	c.expectNone(t, 200*time.Millisecond)

	// Retain Handling 1: only for a new subscription.
	c.subscribe(t, paho.SubscribeOptions{Topic: "r/#", QoS: 1, RetainHandling: 1})
	c.expectNone(t, 200*time.Millisecond)
	c.subscribe(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 1})
	if m := c.expect(t); m.Topic != "r/a" {
		t.Fatalf("RH 1 new subscription: got %q", m.Topic)
	}
	// Retain Handling 2: never.
	c.subscribe(t, paho.SubscribeOptions{Topic: "r/a", QoS: 1, RetainHandling: 2})
	c.expectNone(t, 200*time.Millisecond)

	// 3.1.1 readers see it too.
	c3 := dialV3(t, s.addr, "reader3", true)
	c3.sub(t, "r/a", 0)
	if m := c3.expect(t); string(m.Payload()) != "two" || !m.Retained() {
		t.Fatalf("3.1.1 got %q retained=%v", m.Payload(), m.Retained())
	}
}

// Wills: published on a lost connection, not after a normal DISCONNECT, and
// after DISCONNECT 0x04 ([MQTT-3.1.2-8], [MQTT-3.1.2-10], [MQTT-3.14.4-3]).
func TestWills(t *testing.T) {
	s := startServer(t, nil)
	watcher := dialV5(t, s.addr, "watcher")
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})

	withWill := func(topic string) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte("gone " + topic)}
		}
	}
	lost := dialV5(t, s.addr, "lost", withWill("will/lost"))
	lost.TerminateConnectionForTest()
	if m := watcher.expect(t); m.Topic != "will/lost" {
		t.Fatalf("got %q", m.Topic)
	}

	polite := dialV5(t, s.addr, "polite", withWill("will/polite"))
	polite.Disconnect(&paho.Disconnect{ReasonCode: 0})
	watcher.expectNone(t, 300*time.Millisecond)

	asks := dialV5(t, s.addr, "asks", withWill("will/asks"))
	asks.Disconnect(&paho.Disconnect{ReasonCode: byte(packet.DisconnectWithWill)})
	if m := watcher.expect(t); m.Topic != "will/asks" {
		t.Fatalf("got %q", m.Topic)
	}

	// 3.1.1: a lost connection publishes the will.
	w3 := dialV3(t, s.addr, "w3", true, func(o *mqtt3.ClientOptions) { o.SetWill("will/three", "bye", 1, false) })
	_ = w3
	s.mu.Lock()
	var victim *conn
	for c := range s.conns {
		if c.clientID == "w3" {
			victim = c
		}
	}
	s.mu.Unlock()
	victim.closeNow()
	if m := watcher.expect(t); m.Topic != "will/three" || string(m.Payload) != "bye" {
		t.Fatalf("got %q %q", m.Topic, m.Payload)
	}
}

// Will delay: a reconnect within the delay cancels the will
// ([MQTT-3.1.3-9]); otherwise it is sent after the delay.
func TestWillDelay(t *testing.T) {
	s := startServer(t, nil)
	watcher := dialV5(t, s.addr, "watcher")
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "wd/#", QoS: 1})
	delay := uint32(1)
	withDelayedWill := func(cp *paho.Connect, cfg *paho.ClientConfig) {
		persistentV5(600)(cp, cfg)
		cp.WillMessage = &paho.WillMessage{Topic: "wd/x", QoS: 1, Payload: []byte("late")}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
	}
	c := dialV5(t, s.addr, "delayed", withDelayedWill)
	c.TerminateConnectionForTest()
	dialV5(t, s.addr, "delayed", persistentV5(600)) // back within the delay
	watcher.expectNone(t, 1500*time.Millisecond)

	c3 := dialV5(t, s.addr, "delayed2", withDelayedWill)
	start := time.Now()
	c3.TerminateConnectionForTest()
	if m := watcher.expect(t); m.Topic != "wd/x" {
		t.Fatalf("got %q", m.Topic)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("will sent after %v, before its 1 s delay", d)
	}
}

// An unacknowledged QoS 1 message is sent again with DUP set when the
// session resumes ([MQTT-4.4.0-1], [MQTT-3.3.1-1]).
func TestRedeliveryWithDup(t *testing.T) {
	s := startServer(t, nil)
	c := dialRaw(t, s.addr)
	persist := func(cp *packet.Connect) {
		cp.CleanStart = false
		cp.Properties.SessionExpiry = 600
		cp.Properties.Set(packet.PropSessionExpiry)
	}
	c.connect(packet.V5, "redeliver", persist)
	c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "dup/#", Options: packet.SubOptions{QoS: 1}}}})
	c.read() // SUBACK
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "dup/a", QoS: 1, Payload: []byte("first")})
	first, ok := c.read().(*packet.Publish)
	if !ok || first.Dup {
		t.Fatalf("first delivery: %+v", first)
	}
	c.nc.Close() // no PUBACK
	c2 := dialRaw(t, s.addr)
	ca := c2.connect(packet.V5, "redeliver", persist)
	if !ca.SessionPresent {
		t.Fatal("session not present")
	}
	again, ok := c2.read().(*packet.Publish)
	if !ok || !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "first" {
		t.Fatalf("redelivery: %+v, want DUP with packet id %d", again, first.PacketID)
	}
	c2.send(&packet.Ack{PacketType: packet.PUBACK, PacketID: again.PacketID})
}

// A will whose delay is longer than the session expiry is sent when the
// session ends ([MQTT-3.1.3-9]); protocol errors and keep-alive expiry send
// the will too ([MQTT-3.1.2-8]).
func TestWillAtSessionEndAndOnErrors(t *testing.T) {
	s := startServer(t, nil)
	watcher := dialV5(t, s.addr, "watcher")
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "we/#", QoS: 1})

	long := uint32(3600)
	c := dialV5(t, s.addr, "short-session", func(cp *paho.Connect, cfg *paho.ClientConfig) {
		persistentV5(1)(cp, cfg)
		cp.WillMessage = &paho.WillMessage{Topic: "we/expiry", QoS: 1, Payload: []byte("session over")}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &long}
	})
	start := time.Now()
	c.TerminateConnectionForTest()
	if m := watcher.expect(t); m.Topic != "we/expiry" {
		t.Fatalf("got %q", m.Topic)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("will after %v; the 1 s session expiry should cut the 1 h delay short", d)
	}

	// A protocol error (a second CONNECT) sends the will.
	r := dialRaw(t, s.addr)
	r.connect(packet.V5, "bad-actor", func(cp *packet.Connect) {
		cp.Will = &packet.Will{Topic: "we/error", Payload: []byte("broke"), QoS: 1}
	})
	r.send(&packet.Connect{ProtocolName: "MQTT", Version: packet.V5, ClientID: "again"})
	if m := watcher.expect(t); m.Topic != "we/error" {
		t.Fatalf("got %q", m.Topic)
	}

	// Keep-alive expiry (1 s keep-alive, silence): the will after 1.5 s.
	k := dialRaw(t, s.addr)
	k.connect(packet.V311, "silent", func(cp *packet.Connect) {
		cp.KeepAlive = 1
		cp.Will = &packet.Will{Topic: "we/silent", Payload: []byte("timed out"), QoS: 1}
	})
	if m := watcher.expect(t); m.Topic != "we/silent" {
		t.Fatalf("got %q", m.Topic)
	}
}

// Wildcards at the first level never match topics that start with '$'
// ([MQTT-4.7.2-1]).
func TestWildcardsSkipDollarTopics(t *testing.T) {
	s := startServer(t, nil)
	all := dialV5(t, s.addr, "all")
	all.subscribe(t, paho.SubscribeOptions{Topic: "#", QoS: 0}, paho.SubscribeOptions{Topic: "+/x", QoS: 0})
	dollar := dialV5(t, s.addr, "dollar")
	dollar.subscribe(t, paho.SubscribeOptions{Topic: "$app/#", QoS: 0})
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "$app/x", QoS: 1, Payload: []byte("d")})
	if m := dollar.expect(t); m.Topic != "$app/x" {
		t.Fatalf("got %q", m.Topic)
	}
	all.expectNone(t, 200*time.Millisecond)
}

// A retained message whose expiry passed is not sent to new subscribers
// ([MQTT-3.3.2-5]).
func TestRetainedExpiry(t *testing.T) {
	s := startServer(t, nil)
	pub := dialV5(t, s.addr, "pub")
	one := uint32(1)
	pub.publish(t, &paho.Publish{Topic: "rx/gone", QoS: 1, Retain: true, Payload: []byte("brief"), Properties: &paho.PublishProperties{MessageExpiry: &one}})
	pub.publish(t, &paho.Publish{Topic: "rx/stays", QoS: 1, Retain: true, Payload: []byte("stays")})
	time.Sleep(1100 * time.Millisecond) // the expiry itself is under test
	c := dialV5(t, s.addr, "late")
	c.subscribe(t, paho.SubscribeOptions{Topic: "rx/#", QoS: 1})
	if m := c.expect(t); m.Topic != "rx/stays" {
		t.Fatalf("got %q", m.Topic)
	}
	c.expectNone(t, 200*time.Millisecond)
}

// An offline session's queue is bounded by count; a full queue drops the
// newest message by default and the oldest when configured, and counts it.
func TestQueueDropPolicy(t *testing.T) {
	for _, oldest := range []bool{false, true} {
		t.Run(fmt.Sprintf("drop oldest %v", oldest), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.QueueMessages = 5
			cfg.DropOldest = oldest
			s := startServer(t, &cfg)
			c := dialV5(t, s.addr, "bounded", persistentV5(600))
			c.subscribe(t, paho.SubscribeOptions{Topic: "b/#", QoS: 1})
			c.Disconnect(&paho.Disconnect{})
			// The DISCONNECT is processed before anything is published.
			eventually(t, 5*time.Second, func() error {
				if ss := s.session("bounded"); ss == nil || ss.online() {
					return fmt.Errorf("session not offline yet")
				}
				return nil
			})
			pub := dialV5(t, s.addr, "pub")
			for i := 0; i < 8; i++ {
				pub.publish(t, &paho.Publish{Topic: "b/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			}
			c2 := dialV5(t, s.addr, "bounded", persistentV5(600))
			var got []string
			for range 5 {
				got = append(got, string(c2.expect(t).Payload))
			}
			c2.expectNone(t, 200*time.Millisecond)
			want := "[0 1 2 3 4]"
			if oldest {
				want = "[3 4 5 6 7]"
			}
			if fmt.Sprint(got) != want {
				t.Fatalf("delivered %v, want %s", got, want)
			}
			if n := s.stats.DroppedQueueFull.Load(); n != 3 {
				t.Fatalf("drops counted %d, want 3", n)
			}
		})
	}
}
