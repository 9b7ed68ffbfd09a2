package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// BAD-INPUT.md rows 9–13 and 17–19: PUBLISH topics and headers, properties.

// Row 9: a UTF-8 string that is not well formed (overlong form, surrogate,
// U+0000) anywhere makes the packet malformed ([MQTT-1.5.4-1],
// [MQTT-1.5.4-2] 5.0; [MQTT-1.5.3-1], [MQTT-1.5.3-2] 3.1.1): CONNACK or
// DISCONNECT 0x81 in 5.0, the close in 3.1.1, and nothing is relayed. U+FEFF
// is a character like any other and reaches subscribers as sent
// ([MQTT-1.5.4-3], [MQTT-1.5.3-3]).
func TestBadInput09_InvalidUTF8(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bad := map[string]string{
		"overlong '/'":       "a\xC0\xAFb",
		"surrogate U+D800":   "a/\xED\xA0\x80",
		"U+0000":             "a/\x00/b",
		"truncated":          "a/\xE2\x82",
		"past U+10FFFF":      "a/\xF4\x90\x80\x80",
		"stray continuation": "\x80a",
	}
	bothVersions(t, func(t *testing.T, v packet.Version) {
		for name, text := range bad {
			t.Run(name, func(t *testing.T) {
				inConnect := map[string][]byte{
					"client id":  connectMsg(v, 0x02, 30, nil, str(text)),
					"will topic": connectMsg(v, 0x06, 30, nil, str("utf8-connect"), noProps(v), str(text), str("bye")),
					"user name":  connectMsg(v, 0x82, 30, nil, str("utf8-connect"), str(text)),
				}
				for field, raw := range inConnect {
					t.Run(field, func(t *testing.T) {
						r := dialRaw(t, s.addr)
						r.write(raw)
						r.expectBadConnect(v, packet.MalformedPacket)
						s.noSession(t, "utf8-connect")
					})
				}
				after := [][]byte{
					pkt(0x30, str(text), noProps(v), []byte("payload")),
					pkt(0x33, str(text), u16(1), noProps(v), []byte("retained")),
					pkt(0x82, u16(1), noProps(v), str(text), []byte{1}),
					pkt(0xA2, u16(1), noProps(v), str(text)),
				}
				if v == packet.V5 {
					after = append(after,
						pkt(0x30, str("ok/topic"), props(userProp(text, "v")), []byte("p")),
						pkt(0x30, str("ok/topic"), props(userProp("k", text)), []byte("p")),
						pkt(0x30, str("ok/topic"), props([]byte{0x03}, str(text)), []byte("p")), // content type
					)
				}
				for _, raw := range after {
					r := rawConnected(t, s.addr, v, "utf8")
					r.write(raw)
					r.expectDisconnect(packet.MalformedPacket)
				}
			})
		}
		if n := s.retained.len(); n != 0 {
			t.Fatalf("%d retained messages after invalid topics", n)
		}
		b.healthy(t)

		// U+FEFF is kept as is, in the middle of a topic or at its start.
		r := rawConnected(t, s.addr, v, "bom")
		for _, topic := range []string{"bom/\uFEFFx", "\uFEFFbom"} {
			r.write(pkt(0x32, str(topic), u16(7), noProps(v), []byte("zwnbsp")))
			if a := next[*packet.Ack](r); a.PacketType != packet.PUBACK || a.ReasonCode != packet.Success {
				t.Fatalf("got %s id %d 0x%02X, want PUBACK 0", a.PacketType, a.PacketID, byte(a.ReasonCode))
			}
			b.expect(t, topic)
		}
		b.healthy(t)
	})
}

// Row 10: a topic name with '+' or '#' ([MQTT-3.3.2-2]): DISCONNECT 0x90 in
// 5.0, the close in 3.1.1; never delivered, never stored as retained.
func TestBadInput10_WildcardInTopicName(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		for _, topic := range []string{"a/+", "a/#", "#", "+", "a+b/c", "a/b#", "+/+"} {
			for _, first := range []byte{0x31, 0x33} { // retain at QoS 0, retain at QoS 1
				r := rawConnected(t, s.addr, v, "wild")
				body := cat(str(topic), noProps(v), []byte("retained?"))
				if first == 0x33 {
					body = cat(str(topic), u16(1), noProps(v), []byte("retained?"))
				}
				r.write(pkt(first, body))
				r.expectDisconnect(packet.TopicNameInvalid)
			}
		}
		if n := s.retained.len(); n != 0 {
			t.Fatalf("%d retained messages after wildcard topics", n)
		}
		b.healthy(t)
	})
}

// Row 11: a zero-length topic without a Topic Alias is a protocol error
// (5.0 section 3.3.2.1: DISCONNECT 0x82); 3.1.1 topic names are at least one
// character long ([MQTT-4.7.3-1]): the close. In 5.0 an alias the client
// never set is a protocol error as well.
func TestBadInput11_EmptyTopic(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		for _, raw := range [][]byte{
			pkt(0x30, str(""), noProps(v), []byte("nowhere")),
			pkt(0x32, str(""), u16(3), noProps(v), []byte("nowhere")),
		} {
			r := rawConnected(t, s.addr, v, "empty")
			r.write(raw)
			r.expectDisconnect(packet.ProtocolError)
		}
		if v == packet.V5 {
			r := rawConnected(t, s.addr, v, "empty")
			r.write(pkt(0x30, str(""), props([]byte{0x23}, u16(1)), []byte("unset alias")))
			r.expectDisconnect(packet.ProtocolError)
		}
		b.healthy(t)
	})
}

// Row 12: PUBLISH with QoS 3 ([MQTT-3.3.1-4]), DUP at QoS 0
// ([MQTT-3.3.1-2]), packet identifier 0 ([MQTT-2.2.1-3] 5.0, [MQTT-2.3.1-1]
// 3.1.1), or cut before its packet identifier: malformed, DISCONNECT 0x81
// in 5.0, the close in 3.1.1.
func TestBadInput12_PublishHeader(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		cases := []struct {
			name string
			raw  []byte
		}{
			{"QoS 3", pkt(0x36, str("q/3"), u16(1), noProps(v), []byte("x"))},
			{"QoS 3 with DUP and retain", pkt(0x3F, str("q/3"), u16(1), noProps(v), []byte("x"))},
			{"DUP at QoS 0", pkt(0x38, str("q/dup"), noProps(v), []byte("x"))},
			{"QoS 1 packet id 0", pkt(0x32, str("q/1"), u16(0), noProps(v), []byte("x"))},
			{"QoS 2 packet id 0", pkt(0x34, str("q/2"), u16(0), noProps(v), []byte("x"))},
			{"QoS 2 cut before the packet id", pkt(0x34, str("q/2"))},
			{"QoS 1 cut inside the packet id", pkt(0x32, str("q/1"), []byte{0x00})},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := rawConnected(t, s.addr, v, "pubhdr")
				r.write(c.raw)
				r.expectDisconnect(packet.MalformedPacket)
			})
		}
		b.healthy(t)
	})
}

// Row 13: a client may not publish to $SYS (topics starting with '$' are the
// server's, section 4.7.2): 5.0 gets PUBACK / PUBREC 0x87, 3.1.1 a plain
// acknowledgement, and the message is dropped: not delivered, not retained.
// The connection stays open.
func TestBadInput13_SysTopic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SysInterval = 0 // nothing under $SYS but what clients try to put there
	s := startServer(t, &cfg)
	b := watch(t, s, "#")
	sys := dialV5(t, s.addr, "sys-watcher")
	sys.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/#", QoS: 2}, paho.SubscribeOptions{Topic: "sentinel/#", QoS: 1})
	bothVersions(t, func(t *testing.T, v packet.Version) {
		code := packet.NotAuthorized
		if v == packet.V311 {
			code = packet.Success
		}
		r := rawConnected(t, s.addr, v, "sysclient")
		r.write(pkt(0x30, str("$SYS/broker/uptime"), noProps(v), []byte("0")))
		r.write(pkt(0x31, str("$SYS"), noProps(v), []byte("retained")))
		r.write(pkt(0x33, str("$SYS/broker/clients"), u16(11), noProps(v), []byte("1")))
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBACK || a.PacketID != 11 || a.ReasonCode != code {
			t.Fatalf("got %s id %d 0x%02X, want PUBACK 11 0x%02X", a.PacketType, a.PacketID, byte(a.ReasonCode), byte(code))
		}
		r.write(pkt(0x34, str("$SYS/x"), u16(12), noProps(v), []byte("2")))
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBREC || a.PacketID != 12 || a.ReasonCode != code {
			t.Fatalf("got %s id %d 0x%02X, want PUBREC 12 0x%02X", a.PacketType, a.PacketID, byte(a.ReasonCode), byte(code))
		}
		if v == packet.V311 {
			r.write([]byte{0x62, 0x02, 0x00, 12}) // PUBREL 12
			if a := next[*packet.Ack](r); a.PacketType != packet.PUBCOMP || a.PacketID != 12 {
				t.Fatalf("got %s id %d, want PUBCOMP 12", a.PacketType, a.PacketID)
			}
		}
		r.ping()
		// The sentinel leaves the same connection after the $SYS publishes;
		// had any of them been delivered it would have arrived first.
		r.write(pkt(0x30, str("sentinel/"+v.String()), noProps(v), []byte("after")))
		if m := sys.expect(t); m.Topic != "sentinel/"+v.String() {
			t.Fatalf("$SYS subscriber got %q %q", m.Topic, m.Payload)
		}
		b.expect(t, "sentinel/"+v.String())
		if n := s.retained.len(); n != 0 {
			t.Fatalf("%d retained messages after publishes to $SYS", n)
		}
		b.healthy(t)
	})
}

// Row 17 (5.0 only: 3.1.1 has no properties): an unknown property, or one
// not allowed in the packet, is malformed (section 2.2.2.2: 0x81); a
// property that may appear once appearing twice, and Receive Maximum 0, are
// protocol errors (0x82); a property length past the packet is malformed.
func TestBadInput17_Properties(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	v := packet.V5
	connects := []struct {
		name  string
		props []byte
		code  packet.ReasonCode
	}{
		{"unknown property 0x7F", props([]byte{0x7F, 0x01}), packet.MalformedPacket},
		{"Topic Alias in CONNECT", props([]byte{0x23}, u16(1)), packet.MalformedPacket},
		{"Session Expiry twice", props([]byte{0x11, 0, 0, 0, 5, 0x11, 0, 0, 0, 6}), packet.ProtocolError},
		{"Receive Maximum 0", props([]byte{0x21}, u16(0)), packet.ProtocolError},
		{"Maximum Packet Size 0", props([]byte{0x27, 0, 0, 0, 0}), packet.ProtocolError},
		{"property value cut short", props([]byte{0x21, 0x01}), packet.MalformedPacket},
		{"property length past the packet", []byte{0x40, 0x21, 0x00, 0x05}, packet.MalformedPacket},
		{"property length not minimal", []byte{0x80, 0x00}, packet.MalformedPacket},
	}
	for _, c := range connects {
		t.Run("CONNECT "+c.name, func(t *testing.T) {
			r := dialRaw(t, s.addr)
			r.write(connectMsg(v, 0x02, 30, c.props, str("props")))
			r.expectConnack(v, c.code)
			s.noSession(t, "props")
		})
	}
	publishes := []struct {
		name  string
		props []byte
		code  packet.ReasonCode
	}{
		{"unknown property 0x7F", props([]byte{0x7F, 0x01}), packet.MalformedPacket},
		{"unknown property 0x00", props([]byte{0x00}), packet.MalformedPacket},
		{"Session Expiry in PUBLISH", props([]byte{0x11, 0, 0, 0, 5}), packet.MalformedPacket},
		{"Message Expiry twice", props([]byte{0x02, 0, 0, 0, 5, 0x02, 0, 0, 0, 6}), packet.ProtocolError},
		{"Content Type twice", props([]byte{0x03}, str("a"), []byte{0x03}, str("b")), packet.ProtocolError},
		{"Subscription Identifier from a client", props([]byte{0x0B, 0x01}), packet.ProtocolError},
		{"Payload Format 2", props([]byte{0x01, 0x02}), packet.ProtocolError},
		{"property length past the packet", []byte{0x7F, 0x02, 0, 0, 0, 1}, packet.MalformedPacket},
		{"user property cut short", props([]byte{0x26}, str("key"), []byte{0x00, 0x09, 'v'}), packet.MalformedPacket},
	}
	for _, c := range publishes {
		t.Run("PUBLISH "+c.name, func(t *testing.T) {
			r := rawConnected(t, s.addr, v, "props")
			r.write(pkt(0x30, str("p/x"), c.props, []byte("payload")))
			r.expectDisconnect(c.code)
		})
	}
	t.Run("SUBSCRIBE Subscription Identifier 0", func(t *testing.T) {
		r := rawConnected(t, s.addr, v, "props")
		r.write(pkt(0x82, u16(1), props([]byte{0x0B, 0x00}), str("p/#"), []byte{1}))
		r.expectDisconnect(packet.ProtocolError)
	})
	t.Run("DISCONNECT Session Expiry twice", func(t *testing.T) {
		r := rawConnected(t, s.addr, v, "props")
		r.write(pkt(0xE0, []byte{0x00}, props([]byte{0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2})))
		r.expectDisconnect(packet.ProtocolError)
	})
	b.healthy(t)
}

// Row 18 (5.0 only): a Topic Alias of 0 ([MQTT-3.3.2-8]) or above the Topic
// Alias Maximum the server announced in its CONNACK ([MQTT-3.3.2-9]) gets
// DISCONNECT 0x94; so does any alias when the server announced none.
func TestBadInput18_TopicAlias(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	r := dialRaw(t, s.addr)
	ca := r.connect(packet.V5, "alias")
	r.nc.Close()
	max := ca.Properties.TopicAliasMaximum
	if max == 0 {
		t.Fatal("the CONNACK announces no Topic Alias Maximum")
	}
	for _, alias := range []uint16{0, max + 1, 65535} {
		t.Run(fmt.Sprintf("alias %d of %d", alias, max), func(t *testing.T) {
			r := rawConnected(t, s.addr, packet.V5, "alias")
			r.write(pkt(0x30, str("a/t"), props([]byte{0x23}, u16(alias)), []byte("x")))
			r.expectDisconnect(packet.TopicAliasInvalid)
			r = rawConnected(t, s.addr, packet.V5, "alias")
			r.write(pkt(0x30, str(""), props([]byte{0x23}, u16(alias)), []byte("x")))
			r.expectDisconnect(packet.TopicAliasInvalid)
		})
	}
	b.healthy(t)

	cfg := DefaultConfig()
	cfg.TopicAliasMaximum = 0
	s0 := startServer(t, &cfg)
	r = dialRaw(t, s0.addr)
	r.write(cleanConnect(packet.V5, "alias0"))
	r.rd.SetVersion(packet.V5)
	r.v = packet.V5
	if ca := next[*packet.Connack](r); ca.Properties.TopicAliasMaximum != 0 {
		t.Fatalf("Topic Alias Maximum %d announced, want none", ca.Properties.TopicAliasMaximum)
	}
	r.write(pkt(0x30, str("a/t"), props([]byte{0x23}, u16(1)), []byte("x")))
	r.expectDisconnect(packet.TopicAliasInvalid)
}

// Row 19 (5.0 only): 100,000 User Properties in one packet cost time and
// memory in proportion to the packet, which the packet size limit bounds;
// past the limit the packet is refused from its fixed header with
// DISCONNECT 0x95.
func TestBadInput19_ManyUserProperties(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	many := func(n int) []byte {
		one := userProp("", "")
		return cat(vbi(n*len(one)), repeat(one, n))
	}
	heap := liveHeap()
	r := rawConnected(t, s.addr, packet.V5, "userprops")
	start := time.Now()
	r.write(pkt(0x32, str("props/many"), u16(1), many(100_000), []byte("p")))
	if a := next[*packet.Ack](r); a.PacketType != packet.PUBACK || a.ReasonCode != packet.Success {
		t.Fatalf("got %s 0x%02X, want PUBACK 0", a.PacketType, byte(a.ReasonCode))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("100,000 user properties took %v", d)
	}
	m := b.five.expect(t)
	if m.Topic != "props/many" || len(m.Properties.User) != 100_000 {
		t.Fatalf("5.0 bystander got %q with %d user properties", m.Topic, len(m.Properties.User))
	}
	if m := b.three.expect(t); m.Topic() != "props/many" {
		t.Fatalf("3.1.1 bystander got %q", m.Topic())
	}
	r.ping()
	if g := growth(t, "live heap after 100,000 user properties", heap, liveHeap()); g > 2*mib {
		t.Fatalf("live heap grew by %d MiB after the message was delivered", g/mib)
	}

	// 250,000 properties: 1.25 MB, past the 1 MiB maximum packet size.
	tooMany := pkt(0x30, str("props/toomany"), many(250_000), []byte("p"))
	before := allocated()
	r.nc.Write(tooMany) // fails once the broker has refused the packet and closed
	r.expectDisconnect(packet.PacketTooLarge)
	if g := growth(t, "allocated by a refused 1.25 MB packet", before, allocated()); g > 8*mib {
		t.Fatalf("a refused 1.25 MB packet allocated %d MiB", g/mib)
	}
	b.healthy(t)
}

// repeat is n copies of b.
func repeat(b []byte, n int) []byte { return []byte(strings.Repeat(string(b), n)) }
