package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// BAD-INPUT.md rows 1–8: framing and the CONNECT. Every case sends bytes
// built by hand on a real socket and checks the broker's whole answer, then
// that the broker is healthy and the bystanders saw nothing.

// Row 1: a Remaining Length of five bytes, or one that is not minimally
// encoded ([MQTT-1.5.5-1] 5.0, section 2.2.3 3.1.1), is malformed:
// DISCONNECT 0x81 in 5.0, the close in 3.1.1. Before the CONNECT the
// version is unknown and the close is the only answer.
func TestBadInput01_RemainingLengthTooLong(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	cases := []struct {
		name string
		raw  []byte
	}{
		{"five bytes", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}},
		{"zero in two bytes", []byte{0xC0, 0x80, 0x00}},
		{"two in three bytes", []byte{0x30, 0x82, 0x80, 0x00, 0x00, 0x01}},
	}
	bothVersions(t, func(t *testing.T, v packet.Version) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := rawConnected(t, s.addr, v, "rl")
				r.write(c.raw)
				r.expectDisconnect(packet.MalformedPacket)
				b.healthy(t)
			})
		}
	})
	t.Run("before CONNECT", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		r.write([]byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
		r.expectSilentClose(5 * time.Second)
		r = dialRaw(t, s.addr)
		r.write([]byte{0x10, 0x80, 0x00})
		r.expectSilentClose(5 * time.Second)
		b.healthy(t)
	})
}

// Row 2: a Remaining Length of 256 MB is refused from the fixed header, before
// anything is allocated for the body: DISCONNECT 0x95 (5.0) or the close
// (3.1.1) after the CONNECT, the close alone before it, at once rather than
// at a timeout. A packet under the limit that stops arriving is ended by the
// read deadline: keep-alive × 1.5 after the CONNECT ([MQTT-3.1.2-22] 5.0,
// [MQTT-3.1.2-24] 3.1.1), the connect timeout before.
func TestBadInput02_RemainingLength256MB(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	huge := []byte{0xFF, 0xFF, 0xFF, 0x7F} // 268,435,455
	ten := []byte("0123456789")
	const attempts = 8
	bothVersions(t, func(t *testing.T, v packet.Version) {
		before := allocated()
		for i := 0; i < attempts; i++ {
			r := rawConnected(t, s.addr, v, fmt.Sprintf("big-%d", i))
			r.write(cat([]byte{0x32}, huge, ten))
			start := time.Now()
			r.expectDisconnect(packet.PacketTooLarge)
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("refused after %v: not from the header", d)
			}
		}
		if g := growth(t, "allocated by PUBLISHes announcing 256 MB", before, allocated()); g > 8*mib {
			t.Fatalf("%d packets announcing 256 MB allocated %d MiB", attempts, g/mib)
		}
		b.healthy(t)
	})
	t.Run("before CONNECT", func(t *testing.T) {
		before := allocated()
		for i := 0; i < attempts; i++ {
			r := dialRaw(t, s.addr)
			r.write(cat([]byte{0x10}, huge, ten))
			r.expectSilentClose(2 * time.Second) // the connect timeout is 10 s
		}
		if g := growth(t, "allocated by CONNECTs announcing 256 MB", before, allocated()); g > 8*mib {
			t.Fatalf("%d CONNECTs announcing 256 MB allocated %d MiB", attempts, g/mib)
		}
		b.healthy(t)
	})
}

// Row 2, the read deadline: a packet under the size limit whose bytes stop
// arriving. These subtests wait for the deadline that is the behaviour under
// test, so they run in parallel with the other waiting tests.
func TestBadInput02_StalledPacketDeadline(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.ConnectTimeout = 300 * time.Millisecond
	s := startServer(t, &cfg)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		start := time.Now() // before the broker starts its read deadline
		r := rawConnected(t, s.addr, v, "stall", func(cp *packet.Connect) { cp.KeepAlive = 1 })
		r.write(cat([]byte{0x30}, vbi(1000), str("t"), []byte("ten bytes")))
		r.expectDisconnect(packet.KeepAliveTimeout)
		// 1.5 s, with room for a loaded CI machine.
		if d := time.Since(start); d < 1500*time.Millisecond || d > 4*time.Second {
			t.Fatalf("closed after %v, want about 1.5 s (keep-alive 1 s)", d)
		}
		b.healthy(t)
	})
	t.Run("before CONNECT", func(t *testing.T) {
		start := time.Now()
		r := dialRaw(t, s.addr)
		r.write(cat([]byte{0x10}, vbi(100), []byte("0123456789")))
		r.expectSilentClose(5 * time.Second)
		if d := time.Since(start); d < cfg.ConnectTimeout {
			t.Fatalf("closed after %v, before the connect timeout of 300 ms", d)
		}
		b.healthy(t)
	})
}

// Row 3: the first packet must be CONNECT ([MQTT-3.1.0-1]). Anything else is
// closed without an answer, from its fixed header (a 900 kB PUBLISH is not
// read), and leaves no session behind.
func TestBadInput03_FirstPacketNotConnect(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	cases := []struct {
		name string
		raw  []byte
	}{
		{"PINGREQ", []byte{0xC0, 0x00}},
		{"PUBLISH", pkt(0x30, str("a/b"), []byte("hi"))},
		{"PUBLISH QoS 1", pkt(0x32, str("a/b"), u16(1), []byte("hi"))},
		{"SUBSCRIBE", pkt(0x82, u16(1), str("#"), []byte{0})},
		{"CONNACK", []byte{0x20, 0x02, 0x00, 0x00}},
		{"DISCONNECT", []byte{0xE0, 0x00}},
		{"AUTH", []byte{0xF0, 0x00}},
		{"PUBLISH of 900 kB, header only", cat([]byte{0x30}, vbi(900_000))},
	}
	before := allocated()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, s.addr)
			r.write(c.raw)
			r.expectSilentClose(2 * time.Second)
		})
	}
	if g := growth(t, "allocated by refused first packets", before, allocated()); g > 8*mib {
		t.Fatalf("refused first packets allocated %d MiB", g/mib)
	}
	if ids := s.sessionIDs(); len(ids) != 2 {
		t.Fatalf("sessions %q: want only the two bystanders'", ids)
	}
	if n := s.stats.Connected.Load(); n != 2 {
		t.Fatalf("%d clients connected, want the two bystanders", n)
	}
	b.healthy(t)
}

// Row 4: a second CONNECT on one connection is a protocol error
// ([MQTT-3.1.0-2]): DISCONNECT 0x82 in 5.0, the close in 3.1.1. Neither the
// second client id nor the first (clean) session survives.
func TestBadInput04_SecondConnect(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		r := rawConnected(t, s.addr, v, "first")
		r.write(cleanConnect(v, "second"))
		r.expectDisconnect(packet.ProtocolError)
		eventually(t, 5*time.Second, func() error {
			if s.session("first") != nil {
				return fmt.Errorf("the first connection's clean session is still there")
			}
			return nil
		})
		s.noSession(t, "second")
		b.healthy(t)
	})
}

// Row 5: an unknown protocol name or level. 3.1.1 ([MQTT-3.1.2-2]) answers
// CONNACK 0x01 in its own form and closes; 5.0 ([MQTT-3.1.2-2]) answers
// CONNACK 0x84 when the client speaks 5.0 (level 5) and closes. A client of
// an unknown level is answered in the 3.1.1 form, which every version since
// 3.1 can read.
func TestBadInput05_UnsupportedProtocol(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	connect := func(name string, level byte, v packet.Version) []byte {
		vh := cat(str(name), []byte{level, 0x02}, u16(30))
		if v == packet.V5 {
			vh = append(vh, 0)
		}
		return pkt(0x10, vh, str("proto"))
	}
	cases := []struct {
		name  string
		raw   []byte
		form  packet.Version // the form the CONNACK must decode in
		code  packet.ReasonCode
		agree bool // the broker accepts the CONNECT
	}{
		{"MQTT level 6", connect("MQTT", 6, packet.V5), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"MQTT level 0", connect("MQTT", 0, packet.V311), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"MQTT level 3", connect("MQTT", 3, packet.V311), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"MQIsdp level 4", connect("MQIsdp", 4, packet.V311), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"MQTX level 4", connect("MQTX", 4, packet.V311), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"empty name level 4", connect("", 4, packet.V311), packet.V311, packet.V3UnacceptableProtocolVersion, false},
		{"MQTX level 5", connect("MQTX", 5, packet.V5), packet.V5, packet.UnsupportedProtocolVersion, false},
		{"MQIsdp level 5", connect("MQIsdp", 5, packet.V5), packet.V5, packet.UnsupportedProtocolVersion, false},
		{"mqtt level 5", connect("mqtt", 5, packet.V5), packet.V5, packet.UnsupportedProtocolVersion, false},
		{"MQIsdp level 3 (MQTT 3.1)", connect("MQIsdp", 3, packet.V31), packet.V31, packet.Success, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, s.addr)
			r.write(c.raw)
			if c.agree {
				r.rd.SetVersion(c.form)
				if ca := next[*packet.Connack](r); ca.ReasonCode != c.code {
					t.Fatalf("CONNACK 0x%02X, want 0x%02X", byte(ca.ReasonCode), byte(c.code))
				}
				return
			}
			r.expectConnack(c.form, c.code)
			s.noSession(t, "proto")
		})
	}
	b.healthy(t)
}

// Row 6: CONNECT flags that make the packet malformed: the reserved flag
// ([MQTT-3.1.2-3]), will QoS 3 ([MQTT-3.1.2-12] 5.0, [MQTT-3.1.2-14] 3.1.1),
// will QoS or will retain without the will flag ([MQTT-3.1.2-11],
// [MQTT-3.1.2-13] 5.0; [MQTT-3.1.2-13], [MQTT-3.1.2-15] 3.1.1), and in 3.1.1
// a password without a user name ([MQTT-3.1.2-22]). 5.0 gets CONNACK 0x81,
// 3.1.1 the close. 5.0 allows a password without a user name.
func TestBadInput06_ConnectFlags(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		will := cat(noProps(v), str("will/t"), str("bye"))
		cases := []struct {
			name string
			raw  []byte
		}{
			{"reserved flag", connectMsg(v, 0x03, 30, nil, str("flags"))},
			{"will QoS 3", connectMsg(v, 0x1E, 30, nil, str("flags"), will)},
			{"will QoS without will flag", connectMsg(v, 0x0A, 30, nil, str("flags"))},
			{"will retain without will flag", connectMsg(v, 0x22, 30, nil, str("flags"))},
		}
		if v == packet.V311 {
			cases = append(cases, struct {
				name string
				raw  []byte
			}{"password without user name", connectMsg(v, 0x42, 30, nil, str("flags"), str("secret"))})
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := dialRaw(t, s.addr)
				r.write(c.raw)
				r.expectBadConnect(v, packet.MalformedPacket)
				s.noSession(t, "flags")
			})
		}
		b.healthy(t)
	})
	t.Run("5.0 password without user name is allowed", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		r.write(connectMsg(packet.V5, 0x42, 30, nil, str("pw-only"), str("secret")))
		r.rd.SetVersion(packet.V5)
		if ca := next[*packet.Connack](r); ca.ReasonCode != packet.Success {
			t.Fatalf("CONNACK 0x%02X, want 0", byte(ca.ReasonCode))
		}
	})
}

// Row 7: flags that promise fields the packet does not contain, and lengths
// that run past its end: malformed, never read out of bounds. 5.0 gets
// CONNACK or DISCONNECT 0x81, 3.1.1 the close.
func TestBadInput07_FieldsPastTheEnd(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		connects := []struct {
			name string
			raw  []byte
		}{
			{"will flag, no will", connectMsg(v, 0x06, 30, nil, str("short"))},
			{"will topic, no will payload", connectMsg(v, 0x06, 30, nil, str("short"), noProps(v), str("w"))},
			{"user name flag, no user name", connectMsg(v, 0x82, 30, nil, str("short"))},
			{"password flag, no password", connectMsg(v, 0xC2, 30, nil, str("short"), str("user"))},
			{"client id length past the end", connectMsg(v, 0x02, 30, nil, []byte{0xFF, 0xFF, 'a', 'b', 'c'})},
			{"truncated before keep alive", pkt(0x10, str("MQTT"), []byte{byte(v), 0x02, 0x00})},
			{"user name length past the end", connectMsg(v, 0x82, 30, nil, str("short"), []byte{0x00, 0x40, 'u'})},
		}
		if v == packet.V5 {
			connects = append(connects, struct {
				name string
				raw  []byte
			}{"property length past the end", connectMsg(v, 0x02, 30, []byte{0x20, 0x11, 0, 0, 0, 1}, str("short"))})
		}
		for _, c := range connects {
			t.Run("CONNECT "+c.name, func(t *testing.T) {
				r := dialRaw(t, s.addr)
				r.write(c.raw)
				r.expectBadConnect(v, packet.MalformedPacket)
				s.noSession(t, "short")
			})
		}
		after := []struct {
			name string
			raw  []byte
		}{
			{"PUBLISH topic length past the end", pkt(0x30, []byte{0x00, 0x09, 'a', 'b', 'c'})},
			{"PUBLISH QoS 1 without packet id", pkt(0x32, str("abc"))},
			{"SUBSCRIBE filter length past the end", pkt(0x82, u16(1), noProps(v), []byte{0x00, 0x09, 'a'})},
			{"SUBSCRIBE without options byte", pkt(0x82, u16(1), noProps(v), str("a/b"))},
			{"UNSUBSCRIBE filter length past the end", pkt(0xA2, u16(1), noProps(v), []byte{0x00, 0x20, 'a'})},
			{"PUBREL without packet id", pkt(0x62, []byte{0x01})},
		}
		if v == packet.V5 {
			after = append(after, struct {
				name string
				raw  []byte
			}{"PUBLISH property length past the end", pkt(0x30, str("abc"), []byte{0x30, 0x02, 0, 0, 0, 1})})
		}
		for _, c := range after {
			t.Run(c.name, func(t *testing.T) {
				r := rawConnected(t, s.addr, v, "past")
				r.write(c.raw)
				r.expectDisconnect(packet.MalformedPacket)
			})
		}
		b.healthy(t)
	})
}

// Row 8: client identifiers. 3.1.1: an empty id with clean session 0 gets
// CONNACK 0x02 and the close ([MQTT-3.1.3-8]); 5.0 assigns an id to an
// empty one ([MQTT-3.1.3-6]) and says so in the CONNACK ([MQTT-3.2.2-16]).
// An id over the configured limit is refused: 0x02 in 3.1.1
// ([MQTT-3.1.3-9]), 0x85 in 5.0 ([MQTT-3.1.3-8]).
func TestBadInput08_ClientID(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClientIDLen = 32
	s := startServer(t, &cfg)
	b := watch(t, s, "#")
	t.Run("3.1.1 empty id, clean session 0", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		r.write(connectMsg(packet.V311, 0x00, 30, nil, str("")))
		r.expectConnack(packet.V311, packet.V3IdentifierRejected)
	})
	t.Run("3.1.1 empty id, clean session 1", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		r.write(connectMsg(packet.V311, 0x02, 30, nil, str("")))
		r.rd.SetVersion(packet.V311)
		if ca := next[*packet.Connack](r); ca.ReasonCode != packet.Success {
			t.Fatalf("CONNACK 0x%02X, want 0", byte(ca.ReasonCode))
		}
	})
	t.Run("5.0 empty id", func(t *testing.T) {
		for _, flags := range []byte{0x00, 0x02} { // clean start 0 and 1
			r := dialRaw(t, s.addr)
			r.write(connectMsg(packet.V5, flags, 30, nil, str("")))
			r.rd.SetVersion(packet.V5)
			ca := next[*packet.Connack](r)
			if ca.ReasonCode != packet.Success || ca.Properties.AssignedClientID == "" {
				t.Fatalf("CONNACK 0x%02X, assigned id %q: want 0 with an assigned id", byte(ca.ReasonCode), ca.Properties.AssignedClientID)
			}
		}
	})
	long, limit := strings.Repeat("x", 33), strings.Repeat("y", 32)
	bothVersions(t, func(t *testing.T, v packet.Version) {
		want := packet.ClientIdentifierNotValid
		if v == packet.V311 {
			want = packet.V3IdentifierRejected
		}
		r := dialRaw(t, s.addr)
		r.write(cleanConnect(v, long))
		r.expectConnack(v, want)
		s.noSession(t, long)

		r = dialRaw(t, s.addr)
		r.write(cleanConnect(v, limit))
		r.rd.SetVersion(v)
		if ca := next[*packet.Connack](r); ca.ReasonCode != packet.Success {
			t.Fatalf("id of exactly the limit: CONNACK 0x%02X, want 0", byte(ca.ReasonCode))
		}
		r.nc.Close()
	})
	b.healthy(t)
}
