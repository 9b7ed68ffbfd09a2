package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// 3.1.1 and 5.0 clients exchange messages on one broker, at every QoS, in
// both directions.
func TestV5AndV311Exchange(t *testing.T) {
	s := startServer(t, nil)
	sub5 := dialV5(t, s.addr, "sub5")
	sub3 := dialV3(t, s.addr, "sub3", true)
	sub5.subscribe(t, paho.SubscribeOptions{Topic: "x/from3/#", QoS: 2})
	sub3.sub(t, "x/from5/#", 2)
	pub5 := dialV5(t, s.addr, "pub5")
	pub3 := dialV3(t, s.addr, "pub3", true)
	for qos := byte(0); qos <= 2; qos++ {
		pub3.pub(t, fmt.Sprintf("x/from3/q%d", qos), qos, false, fmt.Sprintf("three-%d", qos))
		m := sub5.expect(t)
		if m.Topic != fmt.Sprintf("x/from3/q%d", qos) || string(m.Payload) != fmt.Sprintf("three-%d", qos) || m.QoS != qos {
			t.Fatalf("5.0 subscriber got %q %q QoS %d", m.Topic, m.Payload, m.QoS)
		}
		pub5.publish(t, &paho.Publish{Topic: fmt.Sprintf("x/from5/q%d", qos), QoS: qos, Payload: []byte(fmt.Sprintf("five-%d", qos))})
		m3 := sub3.expect(t)
		if m3.Topic() != fmt.Sprintf("x/from5/q%d", qos) || string(m3.Payload()) != fmt.Sprintf("five-%d", qos) || m3.Qos() != qos {
			t.Fatalf("3.1.1 subscriber got %q %q QoS %d", m3.Topic(), m3.Payload(), m3.Qos())
		}
	}
}

// [MQTT-3.8.4-8]: delivery QoS is the minimum of the published QoS and the
// granted QoS.
func TestQoSDowngrade(t *testing.T) {
	s := startServer(t, nil)
	sub := dialV5(t, s.addr, "sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "d/q0", QoS: 0}, paho.SubscribeOptions{Topic: "d/q1", QoS: 1})
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "d/q0", QoS: 2, Payload: []byte("a")})
	if m := sub.expect(t); m.QoS != 0 {
		t.Fatalf("QoS 2 publish on a QoS 0 subscription arrived at QoS %d", m.QoS)
	}
	pub.publish(t, &paho.Publish{Topic: "d/q1", QoS: 2, Payload: []byte("b")})
	if m := sub.expect(t); m.QoS != 1 {
		t.Fatalf("QoS 2 publish on a QoS 1 subscription arrived at QoS %d", m.QoS)
	}
}

// Overlapping subscriptions: one copy at the highest QoS, carrying every
// matching subscription identifier ([MQTT-3.3.4-2], [MQTT-3.3.4-3]).
func TestOverlappingSubscriptions(t *testing.T) {
	s := startServer(t, nil)
	sub := dialV5(t, s.addr, "sub")
	id1, id2 := 11, 22
	sub.subscribeWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id1}, paho.SubscribeOptions{Topic: "o/+", QoS: 0})
	sub.subscribeWith(t, &paho.SubscribeProperties{SubscriptionIdentifier: &id2}, paho.SubscribeOptions{Topic: "o/#", QoS: 1})
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "o/x", QoS: 1, Payload: []byte("once")})
	m := sub.expect(t)
	if m.QoS != 1 {
		t.Fatalf("QoS %d, want the higher of the two subscriptions (1)", m.QoS)
	}
	ids := m.Properties.SubscriptionIdentifier
	if ids == nil {
		t.Fatal("no subscription identifier")
	}
	sub.expectNone(t, 200*time.Millisecond)

	// 3.1.1: exactly one copy too.
	sub3 := dialV3(t, s.addr, "sub3", true)
	sub3.sub(t, "p/+", 0)
	sub3.sub(t, "p/#", 2)
	pub.publish(t, &paho.Publish{Topic: "p/x", QoS: 2, Payload: []byte("one")})
	if m := sub3.expect(t); m.Qos() != 2 {
		t.Fatalf("3.1.1 overlapping: QoS %d, want 2", m.Qos())
	}
	select {
	case m := <-sub3.msgs:
		t.Fatalf("3.1.1 overlapping: second copy %q", m.Payload())
	case <-time.After(200 * time.Millisecond):
	}
}

// Properties pass through unchanged ([MQTT-3.3.2-4], [MQTT-3.3.2-15..17],
// [MQTT-3.3.2-20]).
func TestPropertiesPassThrough(t *testing.T) {
	s := startServer(t, nil)
	sub := dialV5(t, s.addr, "sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "props", QoS: 1})
	pub := dialV5(t, s.addr, "pub")
	format := byte(1)
	expiry := uint32(300)
	pub.publish(t, &paho.Publish{Topic: "props", QoS: 1, Payload: []byte("{}"), Properties: &paho.PublishProperties{
		PayloadFormat: &format, MessageExpiry: &expiry, ContentType: "application/json",
		ResponseTopic: "reply/here", CorrelationData: []byte{1, 2, 3},
		User: paho.UserProperties{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: ""}},
	}})
	m := sub.expect(t)
	p := m.Properties
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.ContentType != "application/json" ||
		p.ResponseTopic != "reply/here" || !bytes.Equal(p.CorrelationData, []byte{1, 2, 3}) {
		t.Fatalf("properties changed: %+v", p)
	}
	if len(p.User) != 3 || p.User[0] != (paho.UserProperty{Key: "a", Value: "1"}) || p.User[1] != (paho.UserProperty{Key: "a", Value: "2"}) {
		t.Fatalf("user properties changed: %+v", p.User)
	}
	// [MQTT-3.3.2-6]: the expiry forwarded is what is left of it.
	if p.MessageExpiry == nil || *p.MessageExpiry > 300 || *p.MessageExpiry < 298 {
		t.Fatalf("message expiry %v, want about 300", p.MessageExpiry)
	}
}

// A message whose expiry passed while queued is not delivered
// ([MQTT-3.3.2-5]).
func TestMessageExpiryWhileQueued(t *testing.T) {
	s := startServer(t, nil)
	exp := uint32(300)
	c := dialV5(t, s.addr, "exp", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	})
	c.subscribe(t, paho.SubscribeOptions{Topic: "e/#", QoS: 1})
	c.Disconnect(&paho.Disconnect{})
	pub := dialV5(t, s.addr, "pub")
	one := uint32(1)
	pub.publish(t, &paho.Publish{Topic: "e/short", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: &one}})
	pub.publish(t, &paho.Publish{Topic: "e/long", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: &exp}})
	time.Sleep(1100 * time.Millisecond) // the expiry itself is what is tested
	c2 := dialV5(t, s.addr, "exp", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	})
	m := c2.expect(t)
	if m.Topic != "e/long" {
		t.Fatalf("got %q first; the expired message should be gone", m.Topic)
	}
	c2.expectNone(t, 200*time.Millisecond)
}

// No Local ([MQTT-3.8.3-3]) and Retain As Published ([MQTT-3.3.1-12],
// [MQTT-3.3.1-13]).
func TestNoLocalAndRetainAsPublished(t *testing.T) {
	s := startServer(t, nil)
	c := dialV5(t, s.addr, "self")
	c.subscribe(t, paho.SubscribeOptions{Topic: "nl/a", QoS: 1, NoLocal: true},
		paho.SubscribeOptions{Topic: "nl/b", QoS: 1, RetainAsPublished: true},
		paho.SubscribeOptions{Topic: "nl/c", QoS: 1})
	c.publish(t, &paho.Publish{Topic: "nl/a", QoS: 1, Payload: []byte("mine")})
	c.expectNone(t, 200*time.Millisecond)
	c.publish(t, &paho.Publish{Topic: "nl/b", QoS: 1, Retain: true, Payload: []byte("rap")})
	if m := c.expect(t); !m.Retain {
		t.Fatal("Retain As Published: RETAIN flag cleared")
	}
	c.publish(t, &paho.Publish{Topic: "nl/c", QoS: 1, Retain: true, Payload: []byte("plain")})
	if m := c.expect(t); m.Retain {
		t.Fatal("without Retain As Published a live message must arrive with RETAIN 0")
	}
}
