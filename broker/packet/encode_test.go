package packet

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestAppendForOlderVersions covers what only the encoder does: writing a
// packet built with 5.0 fields for 3.1.1, where properties are dropped and
// reason codes are mapped to what the version can carry.
func TestAppendForOlderVersions(t *testing.T) {
	reason := with(Properties{ReasonString: "x", UserProperties: userProps}, PropReasonString)
	for _, c := range []struct {
		desc string
		p    Packet
		v    Version
		want []byte
	}{
		{"CONNACK 0x85 becomes return code 2", &Connack{ReasonCode: ClientIdentifierNotValid, Properties: reason},
			V311, bs(0x20, 2, 0, 2)},
		{"CONNACK 0x84 becomes return code 1", &Connack{ReasonCode: UnsupportedProtocolVersion}, V311, bs(0x20, 2, 0, 1)},
		{"CONNACK 0x86 becomes return code 4", &Connack{ReasonCode: BadUserNameOrPassword}, V311, bs(0x20, 2, 0, 4)},
		{"CONNACK 0x8A becomes return code 5", &Connack{ReasonCode: Banned}, V311, bs(0x20, 2, 0, 5)},
		{"CONNACK 0x89 becomes return code 3", &Connack{ReasonCode: ServerBusy, SessionPresent: true}, V311, bs(0x20, 2, 1, 3)},
		{"SUBACK failures become 0x80", &Suback{PacketID: 1, Properties: reason,
			ReasonCodes: []ReasonCode{GrantedQoS1, TopicFilterInvalid, NotAuthorized}}, V311, frame(0x90, id16(1), bs(1, 0x80, 0x80))},
		{"PUBLISH drops its properties", &Publish{QoS: 1, PacketID: 3, Topic: "t", Payload: []byte("p"),
			Properties: with(Properties{TopicAlias: 1, ContentType: "c"}, PropTopicAlias, PropContentType)},
			V311, frame(0x32, lstr("t"), id16(3), []byte("p"))},
		{"PUBACK drops reason code and properties", &Ack{PacketType: PUBACK, PacketID: 9, ReasonCode: UnspecifiedError,
			Properties: reason}, V311, frame(0x40, id16(9))},
		{"PUBREL keeps flags 0010", &Ack{PacketType: PUBREL, PacketID: 9, ReasonCode: PacketIdentifierNotFound},
			V311, frame(0x62, id16(9))},
		{"UNSUBACK drops its reason codes", &Unsuback{PacketID: 2, ReasonCodes: []ReasonCode{0, 0x11}}, V311,
			frame(0xB0, id16(2))},
		{"DISCONNECT drops reason code and properties", &Disconnect{ReasonCode: DisconnectWithWill, Properties: reason},
			V311, bs(0xE0, 0)},
		{"SUBSCRIBE writes only the requested QoS", &Subscribe{PacketID: 4, Properties: Properties{SubscriptionIDs: []uint32{1}},
			Subscriptions: []Subscription{{Filter: "a", Options: SubOptions{QoS: 2, NoLocal: true, RetainHandling: 2}}}},
			V311, frame(0x82, id16(4), lstr("a"), bs(2))},
		{"CONNECT drops its properties and will properties", &Connect{Version: V5, ClientID: "c",
			Properties: with(Properties{SessionExpiry: 9}, PropSessionExpiry),
			Will:       &Will{Topic: "w", Payload: []byte("p"), Properties: with(Properties{WillDelay: 1}, PropWillDelay)}},
			V311, frame(0x10, connectHead("MQTT", 4, 0x04, 0), lstr("c"), lstr("w"), lstr("p"))},
		{"CONNECT for 3.1 defaults to MQIsdp", &Connect{ClientID: "c", CleanStart: true}, V31,
			frame(0x10, connectHead("MQIsdp", 3, 0x02, 0), lstr("c"))},
		{"CONNECT with version 0 uses its own", &Connect{Version: V5, ClientID: "c"}, 0,
			frame(0x10, connectHead("MQTT", 5, 0x00, 0), props(), lstr("c"))},
		{"5.0 PUBLISH leaves out a property not allowed in PUBLISH", &Publish{Topic: "t",
			Properties: with(Properties{SessionExpiry: 5, ReasonString: "r"}, PropSessionExpiry, PropReasonString)},
			V5, frame(0x30, lstr("t"), props())},
		{"5.0 AUTH with a reason code and no properties keeps the property length", &Auth{ReasonCode: ReAuthenticate},
			V5, bs(0xF0, 2, 0x19, 0)},
		{"5.0 DISCONNECT with a reason code and no properties is one byte", &Disconnect{ReasonCode: ServerBusy},
			V5, bs(0xE0, 1, 0x89)},
	} {
		got, err := Append(nil, c.p, c.v)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s:\n got % x, %v\nwant % x", c.desc, got, err, c.want)
		}
	}
}

func TestAppendUnencodable(t *testing.T) {
	long := strings.Repeat("a", 65536)
	for _, c := range []struct {
		desc string
		p    Packet
		v    Version
	}{
		{"AUTH in 3.1.1", &Auth{ReasonCode: ContinueAuthentication}, V311},
		{"unknown version", &Publish{Topic: "t"}, 6},
		{"PUBLISH before a version", &Publish{Topic: "t"}, 0},
		{"CONNECT without any version", &Connect{ClientID: "c"}, 0},
		{"PUBLISH QoS 3", &Publish{Topic: "t", QoS: 3}, V311},
		{"will QoS 3", &Connect{ClientID: "c", Will: &Will{Topic: "w", QoS: 3}}, V311},
		{"topic of 65,536 bytes", &Publish{Topic: long}, V311},
		{"client id of 65,536 bytes", &Connect{ClientID: long}, V5},
		{"password of 65,536 bytes", &Connect{ClientID: "c", Password: []byte(long)}, V311},
		{"filter of 65,536 bytes", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: long}}}, V311},
		{"unsubscribe filter of 65,536 bytes", &Unsubscribe{PacketID: 1, Filters: []string{long}}, V5},
		{"user property of 65,536 bytes", &Publish{Topic: "t",
			Properties: Properties{UserProperties: []UserProperty{{"k", long}}}}, V5},
		{"reason string of 65,536 bytes", &Disconnect{Properties: with(Properties{ReasonString: long}, PropReasonString)}, V5},
		{"subscription identifier past the maximum", &Publish{Topic: "t",
			Properties: Properties{SubscriptionIDs: []uint32{MaxRemainingLength + 1}}}, V5},
		{"Ack with a packet type that is no acknowledgement", &Ack{PacketType: PUBLISH}, V5},
	} {
		dst := []byte("keep")
		got, err := Append(dst, c.p, c.v)
		if !errors.Is(err, ErrUnencodable) {
			t.Errorf("%s: err = %v, want ErrUnencodable", c.desc, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst changed to %q", c.desc, got)
		}
		if _, err := Size(c.p, c.v); !errors.Is(err, ErrUnencodable) {
			t.Errorf("%s: Size err = %v", c.desc, err)
		}
	}
	if _, err := finish(MaxRemainingLength+1, nil); !errors.Is(err, ErrUnencodable) {
		t.Errorf("remaining length past the maximum: %v", err)
	}
}
