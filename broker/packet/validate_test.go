package packet

import (
	"strings"
	"testing"
)

func codeOf(err error) ReasonCode {
	if err == nil {
		return 0
	}
	return CodeOf(err)
}

// TestValidateLimits: the zero Limits take the defaults, and each limit is
// applied where it belongs.
func TestValidateLimits(t *testing.T) {
	levels := func(n int) string { return strings.TrimSuffix(strings.Repeat("l/", n), "/") }
	id := func(n int) string { return strings.Repeat("i", n) }
	small := Limits{MaxTopicLevels: 3, MaxClientIDLen: 5, MaxClientIDLenV5: 6, TopicAliasMaximum: 2}
	alias := func(a uint16) *Publish {
		return &Publish{Topic: "t", Properties: with(Properties{TopicAlias: a}, PropTopicAlias)}
	}
	for _, c := range []struct {
		desc string
		p    Packet
		v    Version
		lim  Limits
		want ReasonCode
	}{
		{"zero limits: 23-byte 3.1.1 client id", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: id(23)}, V311, Limits{}, 0},
		{"zero limits: 24-byte 3.1.1 client id", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: id(24)}, V311, Limits{}, 0x85},
		{"zero limits: 256-byte 5.0 client id", &Connect{ProtocolName: "MQTT", Version: V5, ClientID: id(256)}, V5, Limits{}, 0},
		{"zero limits: 257-byte 5.0 client id", &Connect{ProtocolName: "MQTT", Version: V5, ClientID: id(257)}, V5, Limits{}, 0x85},
		{"zero limits: 128 topic levels", &Publish{Topic: levels(128)}, V5, Limits{}, 0},
		{"zero limits: 129 topic levels", &Publish{Topic: levels(129)}, V5, Limits{}, TopicNameInvalid},
		{"zero limits: no topic alias allowed", alias(1), V5, Limits{}, TopicAliasInvalid},
		{"3 levels allowed", &Publish{Topic: levels(3)}, V311, small, 0},
		{"4 levels refused", &Publish{Topic: levels(4)}, V311, small, TopicNameInvalid},
		{"will topic over the level limit", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: "c",
			Will: &Will{Topic: levels(4)}}, V311, small, TopicNameInvalid},
		{"5-byte client id allowed", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: id(5)}, V311, small, 0},
		{"6-byte 3.1.1 client id refused", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: id(6)}, V311, small, 0x85},
		{"6-byte 5.0 client id allowed", &Connect{ProtocolName: "MQTT", Version: V5, ClientID: id(6)}, V5, small, 0},
		{"topic alias at the maximum", alias(2), V5, small, 0},
		{"topic alias above the maximum", alias(3), V5, small, TopicAliasInvalid},
		{"a topic alias property means nothing in 3.1.1", alias(3), V311, small, 0},
	} {
		if got := codeOf(Validate(c.p, c.v, c.lim)); got != c.want {
			t.Errorf("%s: code 0x%02X, want 0x%02X", c.desc, byte(got), byte(c.want))
		}
	}
}

// TestValidateBuiltPackets covers packets built in code rather than decoded,
// which can hold what the wire cannot.
func TestValidateBuiltPackets(t *testing.T) {
	lim := DefaultLimits()
	sub := func(s Subscription) *Subscribe { return &Subscribe{PacketID: 1, Subscriptions: []Subscription{s}} }
	for _, c := range []struct {
		desc string
		p    Packet
		v    Version
		want ReasonCode
	}{
		{"nil packet", nil, V5, ProtocolError},
		{"PUBLISH QoS 3", &Publish{Topic: "t", QoS: 3, PacketID: 1}, V5, MalformedPacket},
		{"PUBLISH QoS 1 without packet id", &Publish{Topic: "t", QoS: 1}, V311, MalformedPacket},
		{"SUBSCRIBE with two Subscription Identifiers", &Subscribe{PacketID: 1,
			Properties: Properties{SubscriptionIDs: []uint32{1, 2}}, Subscriptions: []Subscription{{Filter: "a"}}},
			V5, ProtocolError},
		{"SUBSCRIBE without subscriptions", &Subscribe{PacketID: 1}, V5, ProtocolError},
		{"SUBSCRIBE with packet id 0", sub(Subscription{Filter: "a"}), V5, 0},
		{"SUBSCRIBE QoS 3 in 3.1.1", sub(Subscription{Filter: "a", Options: SubOptions{QoS: 3}}), V311, MalformedPacket},
		{"SUBSCRIBE Retain Handling 3 in 3.1.1 is not looked at", sub(Subscription{Filter: "a",
			Options: SubOptions{RetainHandling: 3}}), V311, 0},
		{"UNSUBSCRIBE with packet id 0", &Unsubscribe{Filters: []string{"a"}}, V311, MalformedPacket},
		{"acknowledgement of type PUBLISH", &Ack{PacketType: PUBLISH, PacketID: 1}, V311, ProtocolError},
		{"CONNECT named MQTT at level 3", &Connect{ProtocolName: "MQTT", Version: V31, ClientID: "c"}, V31,
			UnsupportedProtocolVersion},
		{"3.1.1 CONNECT with a password and no user name", &Connect{ProtocolName: "MQTT", Version: V311,
			ClientID: "c", HasPassword: true}, V311, MalformedPacket},
		{"will QoS 3", &Connect{ProtocolName: "MQTT", Version: V311, ClientID: "c",
			Will: &Will{Topic: "w", QoS: 3}}, V311, MalformedPacket},
		{"5.0 will with a payload format of 1 and a payload that is not UTF-8", &Connect{ProtocolName: "MQTT",
			Version: V5, ClientID: "c", Will: &Will{Topic: "w", Payload: []byte{0xff},
				Properties: with(Properties{PayloadFormat: 1}, PropPayloadFormat)}}, V5, PayloadFormatInvalid},
		{"AUTH on a 3.1.1 connection", &Auth{ReasonCode: ContinueAuthentication,
			Properties: with(Properties{AuthMethod: "m"}, PropAuthMethod)}, V311, ProtocolError},
		{"PINGREQ", &Pingreq{}, V311, 0},
		{"3.1.1 DISCONNECT", &Disconnect{}, V311, 0},
		{"SUBACK from a client", &Suback{PacketID: 1}, V5, ProtocolError},
		{"UNSUBACK from a client", &Unsuback{PacketID: 1}, V5, ProtocolError},
	} {
		if c.desc == "SUBSCRIBE with packet id 0" {
			c.p.(*Subscribe).PacketID = 0
			c.want = MalformedPacket
		}
		if got := codeOf(Validate(c.p, c.v, lim)); got != c.want {
			t.Errorf("%s: code 0x%02X, want 0x%02X", c.desc, byte(got), byte(c.want))
		}
	}
}

func TestFilterCode(t *testing.T) {
	lim := Limits{MaxTopicLevels: 3}
	for _, c := range []struct {
		s    Subscription
		v    Version
		want ReasonCode
	}{
		{Subscription{Filter: "a/b/c", Options: SubOptions{QoS: 2}}, V5, GrantedQoS2},
		{Subscription{Filter: "a/b/c/d"}, V5, TopicFilterInvalid},
		{Subscription{Filter: "a/b/c/d"}, V311, UnspecifiedError},
		{Subscription{Filter: "$share/g/a/b/c", Options: SubOptions{QoS: 1}}, V5, GrantedQoS1},
		{Subscription{Filter: "$share/g/a/b/c/d"}, V5, TopicFilterInvalid},
		{Subscription{Filter: "$share/g+/a"}, V5, TopicFilterInvalid},
		{Subscription{Filter: "$share/g/a", Options: SubOptions{NoLocal: true}}, V5, ProtocolError},
		{Subscription{Filter: "a", Options: SubOptions{NoLocal: true}}, V5, Success},
		{Subscription{Filter: "a", Options: SubOptions{QoS: 3}}, V5, ProtocolError},
		{Subscription{Filter: "a", Options: SubOptions{QoS: 3}}, V311, MalformedPacket},
		{Subscription{Filter: "a", Options: SubOptions{RetainHandling: 3}}, V5, ProtocolError},
		{Subscription{Filter: "", Options: SubOptions{QoS: 1}}, V5, TopicFilterInvalid},
		{Subscription{Filter: "sport/#"}, V311, GrantedQoS0},
		{Subscription{Filter: "sport#"}, V311, UnspecifiedError},
	} {
		if got := FilterCode(c.s, c.v, lim); got != c.want {
			t.Errorf("FilterCode(%+v, %v) = 0x%02X, want 0x%02X", c.s, c.v, byte(got), byte(c.want))
		}
	}
}
