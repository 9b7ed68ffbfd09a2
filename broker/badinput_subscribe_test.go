package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// BAD-INPUT.md rows 14–16 and 23: subscriptions, fixed-header flags and
// reserved packet types.

// suback reads the next packet, a SUBACK for id, and checks its codes.
func (r *raw) suback(t *testing.T, id uint16, want ...packet.ReasonCode) {
	t.Helper()
	sa := next[*packet.Suback](r)
	if sa.PacketID != id || len(sa.ReasonCodes) != len(want) {
		t.Fatalf("SUBACK id %d codes % X, want id %d codes % X", sa.PacketID, sa.ReasonCodes, id, want)
	}
	for i := range want {
		if sa.ReasonCodes[i] != want[i] {
			t.Fatalf("SUBACK codes % X, want % X", sa.ReasonCodes, want)
		}
	}
}

// subscriptions returns the filters of id's session.
func (s *testServer) subscriptions(t *testing.T, id string) []string {
	t.Helper()
	ss := s.session(id)
	if ss == nil {
		t.Fatalf("no session for %q", id)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var fs []string
	for f := range ss.subs {
		fs = append(fs, f)
	}
	return fs
}

// Row 14: a filter of 65,535 '/' (65,536 levels) is refused by the level
// limit — SUBACK 0x8F in 5.0, 0x80 in 3.1.1 — next to a valid filter of the
// same SUBSCRIBE, which is granted. Validation makes one pass and stops at
// the limit: twenty such SUBSCRIBEs are quick and allocate little beyond
// their own bytes. A topic name that deep is refused too (0x90).
func TestBadInput14_DeepFilter(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	deep := strings.Repeat("/", 65535)
	bothVersions(t, func(t *testing.T, v packet.Version) {
		bad := packet.TopicFilterInvalid
		if v == packet.V311 {
			bad = packet.UnspecifiedError
		}
		r := rawConnected(t, s.addr, v, "deep")
		const n = 20
		msgs := make([][]byte, n)
		for i := range msgs {
			msgs[i] = pkt(0x82, u16(uint16(i+1)), noProps(v), str(deep), []byte{1}, str("ok/+"), []byte{1})
		}
		start, before := time.Now(), allocated()
		for i, m := range msgs {
			r.write(m)
			r.suback(t, uint16(i+1), bad, packet.GrantedQoS1)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%d SUBSCRIBEs of a 65,536-level filter took %v", n, d)
		}
		if g := growth(t, "allocated by the deep SUBSCRIBEs", before, allocated()); g > 8*mib {
			t.Fatalf("%d SUBSCRIBEs of 64 kB allocated %d MiB", n, g/mib)
		}
		if fs := s.subscriptions(t, "deep"); len(fs) != 1 || fs[0] != "ok/+" {
			t.Fatalf("subscriptions %q, want only \"ok/+\"", fs)
		}
		r.write(pkt(0x30, str(deep), noProps(v), []byte("deep")))
		r.expectDisconnect(packet.TopicNameInvalid)
		b.healthy(t)
	})
}

// Row 15: invalid filters are refused one by one in the SUBACK (0x8F in 5.0,
// 0x80 in 3.1.1) while the valid ones of the same SUBSCRIBE are granted:
// '#' not last or not a whole level, '+' not a whole level ([MQTT-4.7.1-1],
// [MQTT-4.7.1-2] 5.0; [MQTT-4.7.1-2], [MQTT-4.7.1-3] 3.1.1), and a $share
// without a share name or a filter ([MQTT-4.8.2-1], [MQTT-4.8.2-2]). No Local
// on a shared subscription is a protocol error ([MQTT-3.8.3-4]): DISCONNECT
// 0x82.
func TestBadInput15_BadFilters(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	filters := []string{"a/#/b", "+a", "a+", "a/b#", "#/a", "$share//x", "$share/g", "$share/g/", "$share/g+/x", "$share/#/x"}
	bothVersions(t, func(t *testing.T, v packet.Version) {
		bad := packet.TopicFilterInvalid
		if v == packet.V311 {
			bad = packet.UnspecifiedError
		}
		var body [][]byte
		var want []packet.ReasonCode
		for _, f := range filters {
			body = append(body, str(f), []byte{1})
			want = append(want, bad)
		}
		body = append(body, str("fine/#"), []byte{1}, str("$share/g/fine/+"), []byte{0})
		want = append(want, packet.GrantedQoS1, packet.GrantedQoS0)
		r := rawConnected(t, s.addr, v, "filters")
		r.write(pkt(0x82, u16(5), noProps(v), cat(body...)))
		r.suback(t, 5, want...)
		if fs := s.subscriptions(t, "filters"); len(fs) != 2 {
			t.Fatalf("subscriptions %q, want the two valid filters", fs)
		}
		r.ping()
		b.healthy(t)
	})
	t.Run("5.0 No Local on a shared subscription", func(t *testing.T) {
		r := rawConnected(t, s.addr, packet.V5, "nolocal")
		r.write(pkt(0x82, u16(1), props(), str("$share/g/x"), []byte{0x05}))
		r.expectDisconnect(packet.ProtocolError)
		b.healthy(t)
	})
}

// Row 16: SUBSCRIBE, UNSUBSCRIBE and PUBREL carry fixed-header flags 0010
// ([MQTT-3.8.1-1], [MQTT-3.10.1-1], [MQTT-3.6.1-1]; [MQTT-2.1.3-1] 5.0,
// [MQTT-2.2.2-1] 3.1.1), other packets 0000; the reserved bits of the
// subscription options are 0 ([MQTT-3.8.3-5] 5.0, [MQTT-3-8.3-4] 3.1.1):
// otherwise DISCONNECT 0x81 in 5.0, the close in 3.1.1. A SUBSCRIBE or
// UNSUBSCRIBE without a filter ([MQTT-3.8.3-2], [MQTT-3.10.3-2]) is, in
// 5.0's own words, a Protocol Error: 0x82. So are Retain Handling 3 and a
// requested QoS of 3 in 5.0 (section 3.8.3.1).
func TestBadInput16_ReservedFlags(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		sub := cat(u16(1), noProps(v), str("f/#"), []byte{1})
		unsub := cat(u16(1), noProps(v), str("f/#"))
		malformed := []struct {
			name string
			raw  []byte
		}{
			{"SUBSCRIBE flags 0000", pkt(0x80, sub)},
			{"SUBSCRIBE flags 0011", pkt(0x83, sub)},
			{"SUBSCRIBE flags 1010", pkt(0x8A, sub)},
			{"UNSUBSCRIBE flags 0000", pkt(0xA0, unsub)},
			{"UNSUBSCRIBE flags 0110", pkt(0xA6, unsub)},
			{"PUBREL flags 0000", []byte{0x60, 0x02, 0x00, 0x01}},
			{"PUBREL flags 1010", []byte{0x6A, 0x02, 0x00, 0x01}},
			{"PUBACK flags 0010", []byte{0x42, 0x02, 0x00, 0x01}},
			{"PINGREQ flags 0001", []byte{0xC1, 0x00}},
			{"DISCONNECT flags 0100", []byte{0xE4, 0x00}},
			{"SUBSCRIBE packet id 0", pkt(0x82, u16(0), noProps(v), str("f/#"), []byte{1})},
		}
		if v == packet.V5 {
			malformed = append(malformed,
				struct {
					name string
					raw  []byte
				}{"options bits 6-7", pkt(0x82, u16(1), props(), str("f/#"), []byte{0xC1})},
				struct {
					name string
					raw  []byte
				}{"options bit 7", pkt(0x82, u16(1), props(), str("f/#"), []byte{0x81})})
		} else {
			malformed = append(malformed,
				struct {
					name string
					raw  []byte
				}{"options bit 2 (No Local is 5.0)", pkt(0x82, u16(1), str("f/#"), []byte{0x05})},
				struct {
					name string
					raw  []byte
				}{"options bits 4-5 (Retain Handling is 5.0)", pkt(0x82, u16(1), str("f/#"), []byte{0x11})},
				struct {
					name string
					raw  []byte
				}{"requested QoS 3", pkt(0x82, u16(1), str("f/#"), []byte{0x03})})
		}
		for _, c := range malformed {
			t.Run(c.name, func(t *testing.T) {
				r := rawConnected(t, s.addr, v, "flags")
				r.write(c.raw)
				r.expectDisconnect(packet.MalformedPacket)
			})
		}
		protocol := []struct {
			name string
			raw  []byte
		}{
			{"SUBSCRIBE without a filter", pkt(0x82, u16(1), noProps(v))},
			{"UNSUBSCRIBE without a filter", pkt(0xA2, u16(1), noProps(v))},
		}
		if v == packet.V5 {
			protocol = append(protocol,
				struct {
					name string
					raw  []byte
				}{"Retain Handling 3", pkt(0x82, u16(1), props(), str("f/#"), []byte{0x31})},
				struct {
					name string
					raw  []byte
				}{"requested QoS 3", pkt(0x82, u16(1), props(), str("f/#"), []byte{0x03})})
		}
		for _, c := range protocol {
			t.Run(c.name, func(t *testing.T) {
				r := rawConnected(t, s.addr, v, "flags")
				r.write(c.raw)
				r.expectDisconnect(packet.ProtocolError) // 3.1.1: the close
			})
		}
		b.healthy(t)
	})
}

// Row 23: packet type 0 is forbidden in every version, type 15 before 5.0
// (the packet type tables, section 2.1.2 of 5.0 and 2.2.1 of 3.1.1):
// malformed, DISCONNECT 0x81 in 5.0, the close in 3.1.1. A 5.0 AUTH when no
// enhanced authentication was negotiated is a protocol error (section
// 4.12): DISCONNECT 0x82. Before the CONNECT either closes the connection
// without an answer ([MQTT-3.1.0-1]).
func TestBadInput23_ReservedPacketTypes(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		for _, raw := range [][]byte{{0x00, 0x00}, {0x0F, 0x00}, pkt(0x00, []byte("junk"))} {
			r := rawConnected(t, s.addr, v, "reserved")
			r.write(raw)
			r.expectDisconnect(packet.MalformedPacket)
		}
		auths := [][]byte{
			{0xF0, 0x00}, // AUTH success: a client may not send 0x00
			pkt(0xF0, []byte{0x19}, props([]byte{0x15}, str("SCRAM-SHA-1"))), // re-authenticate
			pkt(0xF0, []byte{0x18}, props([]byte{0x15}, str("SCRAM-SHA-1"))), // continue
		}
		want := packet.ProtocolError
		if v == packet.V311 {
			auths = [][]byte{{0xF0, 0x00}, pkt(0xF0, []byte{0x18, 0x00})}
			want = packet.MalformedPacket // 3.1.1: the close either way
		}
		for _, raw := range auths {
			r := rawConnected(t, s.addr, v, "reserved")
			r.write(raw)
			r.expectDisconnect(want)
		}
		b.healthy(t)
	})
	t.Run("before CONNECT", func(t *testing.T) {
		for _, raw := range [][]byte{{0x00, 0x00}, {0xF0, 0x00}, pkt(0xF0, []byte{0x18}, props([]byte{0x15}, str("x")))} {
			r := dialRaw(t, s.addr)
			r.write(raw)
			r.expectSilentClose(2 * time.Second)
		}
		if ids := s.sessionIDs(); len(ids) != 2 {
			t.Fatalf("sessions %q: want only the two bystanders'", ids)
		}
		b.healthy(t)
	})
}
