package broker

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// The CONNACK announces what the server supports and decided
// ([MQTT-3.2.2-...]): Receive Maximum, Maximum Packet Size, Topic Alias
// Maximum, Server Keep Alive when it overrides the client, an assigned client
// id for an empty one, and the features that are off.
func TestConnackProperties(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxKeepAlive = 60
	cfg.MaximumQoS = 1
	cfg.RetainAvailable = false
	cfg.SharedSubscriptions = false
	cfg.ResponseInformation = "resp/"
	s := startServer(t, &cfg)
	r := dialRaw(t, s.addr)
	ca := r.connect(packet.V5, "", func(cp *packet.Connect) {
		cp.KeepAlive = 0 // asks for no keep-alive; the server caps it at 60
		cp.Properties.RequestResponseInfo = 1
		cp.Properties.Set(packet.PropRequestResponseInfo)
	})
	p := &ca.Properties
	checks := []struct {
		name string
		ok   bool
	}{
		{"assigned client id", p.Has(packet.PropAssignedClientID) && p.AssignedClientID != ""},
		{"server keep alive 60", p.Has(packet.PropServerKeepAlive) && p.ServerKeepAlive == 60},
		{"receive maximum", p.Has(packet.PropReceiveMaximum) && p.ReceiveMaximum == cfg.ReceiveMaximum},
		{"maximum packet size", p.Has(packet.PropMaximumPacketSize) && p.MaximumPacketSize == uint32(cfg.MaxPacketSize)},
		{"topic alias maximum", p.Has(packet.PropTopicAliasMaximum) && p.TopicAliasMaximum == cfg.TopicAliasMaximum},
		{"maximum QoS 1", p.Has(packet.PropMaximumQoS) && p.MaximumQoS == 1},
		{"retain not available", p.Has(packet.PropRetainAvailable) && p.RetainAvailable == 0},
		{"shared subscriptions not available", p.Has(packet.PropSharedSubAvailable) && p.SharedSubAvailable == 0},
		{"response information", p.ResponseInfo == "resp/"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("CONNACK: %s missing or wrong: %+v", c.name, *p)
		}
	}
	// A client that did not ask gets no response information ([MQTT-3.1.2-28]).
	r2 := dialRaw(t, s.addr)
	if ca2 := r2.connect(packet.V5, "quiet"); ca2.Properties.ResponseInfo != "" || ca2.Properties.Has(packet.PropAssignedClientID) {
		t.Errorf("unrequested properties in CONNACK: %+v", ca2.Properties)
	}
}

// Shared subscriptions: each message goes to exactly one member, the load
// is spread over the members, and a member that leaves hands its
// unacknowledged messages to the others.
func TestSharedSubscriptions(t *testing.T) {
	for _, strategy := range []SharedStrategy{ShareRoundRobin, ShareRandom, ShareSticky, ShareHash} {
		t.Run(string(strategy), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.SharedStrategy = strategy
			s := startServer(t, &cfg)
			members := make([]*v5, 3)
			for i := range members {
				members[i] = dialV5(t, s.addr, fmt.Sprintf("m%d", i))
				members[i].subscribe(t, paho.SubscribeOptions{Topic: "$share/g/work/#", QoS: 1})
			}
			pub := dialV5(t, s.addr, "pub")
			const n = 60
			for i := 0; i < n; i++ {
				pub.publish(t, &paho.Publish{Topic: "work/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			}
			seen := map[string]bool{}
			per := make([]int, len(members))
			eventually(t, 5*time.Second, func() error {
				for i, m := range members {
					for len(m.msgs) > 0 {
						msg := <-m.msgs
						if seen[string(msg.Payload)] {
							return fmt.Errorf("message %s delivered to two members", msg.Payload)
						}
						seen[string(msg.Payload)] = true
						per[i]++
					}
				}
				if len(seen) != n {
					return fmt.Errorf("%d of %d messages delivered", len(seen), n)
				}
				return nil
			})
			busy := 0
			for _, k := range per {
				if k > 0 {
					busy++
				}
			}
			switch strategy {
			case ShareRoundRobin:
				if per[0] != n/3 || per[1] != n/3 || per[2] != n/3 {
					t.Fatalf("round robin spread %v", per)
				}
			case ShareRandom:
				if busy < 2 {
					t.Fatalf("random spread %v", per)
				}
			case ShareSticky, ShareHash:
				if busy != 1 {
					t.Fatalf("%s spread %v, want one member for one publisher", strategy, per)
				}
			}
		})
	}
}

// A share-group member whose session ends with unacknowledged messages:
// they go to another member.
func TestSharedRedistributionOnLeave(t *testing.T) {
	s := startServer(t, nil)
	// The lazy member never acknowledges (manual acks, never sent).
	lazy := dialV5(t, s.addr, "lazy", func(_ *paho.Connect, cfg *paho.ClientConfig) {
		cfg.EnableManualAcknowledgment = true
	})
	lazy.subscribe(t, paho.SubscribeOptions{Topic: "$share/g/jobs", QoS: 1})
	pub := dialV5(t, s.addr, "pub")
	pub.publish(t, &paho.Publish{Topic: "jobs", QoS: 1, Payload: []byte("job-1")})
	if m := lazy.expect(t); string(m.Payload) != "job-1" {
		t.Fatalf("got %q", m.Payload)
	}
	busy := dialV5(t, s.addr, "busy")
	busy.subscribe(t, paho.SubscribeOptions{Topic: "$share/g/jobs", QoS: 1})
	lazy.TerminateConnectionForTest() // clean start, expiry 0: the session ends
	if m := busy.expect(t); string(m.Payload) != "job-1" {
		t.Fatalf("redistributed %q", m.Payload)
	}
}

// Topic aliases in both directions ([MQTT-3.3.2-12], [MQTT-3.3.2-7]): the
// client sets an alias and then publishes with the alias alone; the server
// assigns aliases to a subscriber that allows them.
func TestTopicAliases(t *testing.T) {
	s := startServer(t, nil)
	sub := dialRaw(t, s.addr)
	sub.connect(packet.V5, "aliased-sub", func(cp *packet.Connect) {
		cp.Properties.TopicAliasMaximum = 5
		cp.Properties.Set(packet.PropTopicAliasMaximum)
	})
	sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "alias/#"}}})
	if _, ok := sub.read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	pub := dialRaw(t, s.addr)
	pub.connect(packet.V5, "aliased-pub")
	first := &packet.Publish{Topic: "alias/long/topic/name", Payload: []byte("1")}
	first.Properties.TopicAlias = 3
	first.Properties.Set(packet.PropTopicAlias)
	pub.send(first)
	second := &packet.Publish{Topic: "", Payload: []byte("2")}
	second.Properties.TopicAlias = 3
	second.Properties.Set(packet.PropTopicAlias)
	pub.send(second)

	m1, ok := sub.read().(*packet.Publish)
	if !ok || m1.Topic != "alias/long/topic/name" || !m1.Properties.Has(packet.PropTopicAlias) {
		t.Fatalf("first delivery: want the topic with a new alias, got %+v", m1)
	}
	m2, ok := sub.read().(*packet.Publish)
	if !ok || m2.Topic != "" || m2.Properties.TopicAlias != m1.Properties.TopicAlias || string(m2.Payload) != "2" {
		t.Fatalf("second delivery: want the alias alone, got %+v", m2)
	}
	// An alias the client never set is a protocol error.
	bad := &packet.Publish{Topic: "", Payload: []byte("x")}
	bad.Properties.TopicAlias = 4
	bad.Properties.Set(packet.PropTopicAlias)
	pub.send(bad)
	got := pub.expectClosed(5 * time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.ProtocolError {
		t.Fatalf("unknown alias: got %v, want DISCONNECT 0x82", got)
	}
}

// challenge is an enhanced authenticator: method "CHAL", the client must
// answer the server's challenge with it reversed.
type challenge struct{}

func (challenge) Authenticate(req *AuthRequest) AuthResult {
	switch {
	case req.Method != "CHAL":
		return AuthResult{Code: packet.BadAuthenticationMethod}
	case len(req.Data) == 0 || string(req.Data) == "hello":
		return AuthResult{Code: packet.ContinueAuthentication, Data: []byte("abc")}
	case string(req.Data) == "cba":
		return AuthResult{Code: packet.Success, Data: []byte("welcome")}
	}
	return AuthResult{Code: packet.NotAuthorized}
}

// The AUTH exchange of enhanced authentication ([MQTT-4.12.0-...]) through
// the pluggable Authenticator, with paho's Auther on the client side.
func TestEnhancedAuthentication(t *testing.T) {
	s := startServer(t, nil, func(o *Options) { o.Auth = challenge{} })
	c := dialV5(t, s.addr, "auth", func(cp *paho.Connect, cfg *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{AuthMethod: "CHAL", AuthData: []byte("hello")}
		cfg.AuthHandler = &reverser{}
	})
	if c.connack.Properties == nil || !bytes.Equal(c.connack.Properties.AuthData, []byte("welcome")) {
		t.Fatalf("CONNACK auth data %+v", c.connack.Properties)
	}
	// A wrong answer is refused with 0x87.
	refused, err := tryDialV5(s.addr, "auth2", func(cp *paho.Connect, cfg *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{AuthMethod: "CHAL", AuthData: []byte("hello")}
		cfg.AuthHandler = &wrongAnswer{}
	})
	if err == nil || refused.connack == nil || refused.connack.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("wrong answer: %v %+v, want CONNACK 0x87", err, refused.connack)
	}
	// An unknown method is refused with 0x8C.
	refused, err = tryDialV5(s.addr, "auth3", func(cp *paho.Connect, cfg *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{AuthMethod: "OTHER"}
	})
	if err == nil || refused.connack == nil || refused.connack.ReasonCode != byte(packet.BadAuthenticationMethod) {
		t.Fatalf("unknown method: %v %+v, want CONNACK 0x8C", err, refused.connack)
	}
}

type reverser struct{}

func (reverser) Authenticate(a *paho.Auth) *paho.Auth {
	d := a.Properties.AuthData
	out := make([]byte, len(d))
	for i := range d {
		out[len(d)-1-i] = d[i]
	}
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "CHAL", AuthData: out}}
}

func (reverser) Authenticated() {}

type wrongAnswer struct{}

func (wrongAnswer) Authenticate(a *paho.Auth) *paho.Auth {
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "CHAL", AuthData: []byte("nope")}}
}

func (wrongAnswer) Authenticated() {}

// Request/response: the response topic and correlation data reach the
// responder, whose answer reaches the requester ([MQTT-4.10.0-...]).
func TestRequestResponse(t *testing.T) {
	s := startServer(t, nil)
	responder := dialV5(t, s.addr, "responder")
	responder.subscribe(t, paho.SubscribeOptions{Topic: "svc/req", QoS: 1})
	requester := dialV5(t, s.addr, "requester")
	requester.subscribe(t, paho.SubscribeOptions{Topic: "svc/resp/requester", QoS: 1})
	requester.publish(t, &paho.Publish{Topic: "svc/req", QoS: 1, Payload: []byte("ping"),
		Properties: &paho.PublishProperties{ResponseTopic: "svc/resp/requester", CorrelationData: []byte("c-42")}})
	req := responder.expect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := responder.Publish(ctx, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: []byte("pong"),
		Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}}); err != nil {
		t.Fatal(err)
	}
	resp := requester.expect(t)
	if string(resp.Payload) != "pong" || string(resp.Properties.CorrelationData) != "c-42" {
		t.Fatalf("response %q correlation %q", resp.Payload, resp.Properties.CorrelationData)
	}
}
