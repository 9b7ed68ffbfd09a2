package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// BAD-INPUT.md rows 20–22: the QoS 1 and QoS 2 flows of a client that does
// not play by the rules.

// Row 20 (5.0 only): a client that has more QoS 2 PUBLISHes unacknowledged
// than the Receive Maximum the server announced (section 3.3.4) gets
// DISCONNECT 0x93. QoS 1 PUBLISHes are acknowledged as they are routed, so
// only QoS 2 ones (unfinished until PUBREL) pile up against the limit.
func TestBadInput20_ReceiveMaximum(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	r := dialRaw(t, s.addr)
	ca := r.connect(packet.V5, "rm")
	rm := int(ca.Properties.ReceiveMaximum)
	if !ca.Properties.Has(packet.PropReceiveMaximum) || rm == 0 {
		t.Fatal("the CONNACK announces no Receive Maximum")
	}
	for id := 1; id <= rm; id++ {
		r.write(pkt(0x34, str("rm/q2"), u16(uint16(id)), props(), []byte(fmt.Sprint(id))))
	}
	for id := 1; id <= rm; id++ {
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBREC || a.PacketID != uint16(id) || a.ReasonCode != packet.Success {
			t.Fatalf("got %s id %d 0x%02X, want PUBREC %d", a.PacketType, a.PacketID, byte(a.ReasonCode), id)
		}
	}
	r.write(pkt(0x34, str("rm/q2"), u16(uint16(rm+1)), props(), []byte("one too many")))
	r.expectDisconnect(packet.ReceiveMaximumExceeded)
	for i := 0; i < rm; i++ {
		b.expect(t, "rm/q2")
	}
	b.healthy(t)
}

// Row 21: QoS 2 PUBLISHes never released. The ids awaiting PUBREL are
// capped (MaxAwaitingRel, 100 by default) and the client is disconnected
// past the cap: 3.1.1 is closed, 5.0 (with a Receive Maximum above the cap)
// gets DISCONNECT 0x97 quota exceeded. A repeated id gets PUBREC again and is
// not delivered twice (5.0 section 4.3.3, [MQTT-4.3.3-2] 3.1.1). A burst of
// 65,535 such PUBLISHes leaves no more state than the cap.
func TestBadInput21_AwaitingPubrelCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReceiveMaximum = 1000
	s := startServer(t, &cfg)
	b := watch(t, s, "#")
	capRel := cfg.MaxAwaitingRel
	bothVersions(t, func(t *testing.T, v packet.Version) {
		id := "rel-" + v.String()
		r := rawConnected(t, s.addr, v, id, func(cp *packet.Connect) {
			cp.CleanStart = false // the session outlives the connection: its state can be inspected
			if v == packet.V5 {
				cp.Properties.SessionExpiry = 600
				cp.Properties.Set(packet.PropSessionExpiry)
			}
		})
		topic := "rel/" + v.String()
		for i := 1; i <= capRel; i++ {
			r.write(pkt(0x34, str(topic), u16(uint16(i)), noProps(v), []byte(fmt.Sprint(i))))
		}
		for i := 1; i <= capRel; i++ {
			if a := next[*packet.Ack](r); a.PacketType != packet.PUBREC || a.PacketID != uint16(i) {
				t.Fatalf("got %s id %d, want PUBREC %d", a.PacketType, a.PacketID, i)
			}
		}
		// The same id again, with DUP: PUBREC again, no second delivery.
		r.write(pkt(0x3C, str(topic), u16(7), noProps(v), []byte("7 again")))
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBREC || a.PacketID != 7 {
			t.Fatalf("got %s id %d, want PUBREC 7", a.PacketType, a.PacketID)
		}
		r.write(pkt(0x34, str(topic), u16(uint16(capRel+1)), noProps(v), []byte("over the cap")))
		r.expectDisconnect(packet.QuotaExceeded)
		for i := 1; i <= capRel; i++ {
			if m := b.five.expect(t); m.Topic != topic || string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("5.0 bystander got %q %q, want %q %d", m.Topic, m.Payload, topic, i)
			}
			if m := b.three.expect(t); m.Topic() != topic || string(m.Payload()) != fmt.Sprint(i) {
				t.Fatalf("3.1.1 bystander got %q %q, want %q %d", m.Topic(), m.Payload(), topic, i)
			}
		}
		ss := s.session(id)
		if ss == nil {
			t.Fatal("the persistent session is gone")
		}
		if n := ss.awaitingRelLen(); n != capRel {
			t.Fatalf("%d ids awaiting PUBREL, want the cap %d", n, capRel)
		}
		b.healthy(t)

		// A burst of 65,535 QoS 2 PUBLISHes on a clean session: the cap
		// ends it after the first 100, whatever else was sent.
		heap := liveHeap()
		burst := rawConnected(t, s.addr, v, id+"-burst")
		var all []byte
		for i := 1; i <= 65535; i++ {
			all = append(all, pkt(0x34, str("burst"), u16(uint16(i)), noProps(v))...)
		}
		go burst.nc.Write(all) // fails once the broker closes the connection
		got := burst.answer(v, 10*time.Second)
		for i, pk := range got {
			switch p := pk.(type) {
			case *packet.Ack:
				if p.PacketType == packet.PUBREC && i < capRel {
					continue
				}
			case *packet.Disconnect:
				if v == packet.V5 && p.ReasonCode == packet.QuotaExceeded && i == len(got)-1 {
					continue
				}
			}
			t.Fatalf("answer to the burst: %s; want at most %d PUBRECs, then DISCONNECT 0x97 in 5.0", describe(got), capRel)
		}
		for i := 0; i < capRel; i++ {
			b.expect(t, "burst")
		}
		eventually(t, 5*time.Second, func() error {
			if s.session(id+"-burst") != nil {
				return fmt.Errorf("the burst's clean session is still there")
			}
			return nil
		})
		if g := growth(t, "live heap after the burst", heap, liveHeap()); g > 2*mib {
			t.Fatalf("live heap grew by %d MiB after the burst", g/mib)
		}
		b.healthy(t)
	})
}

// awaitingRelLen is the number of inbound QoS 2 ids awaiting PUBREL.
func (ss *session) awaitingRelLen() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.awaitingRel)
}

// Row 22: acknowledgements for packet ids the broker never used. PUBACK and
// PUBCOMP are ignored; PUBREC gets PUBREL and PUBREL gets PUBCOMP, with
// 0x92 packet identifier not found in 5.0 (the reason code tables of 3.6.2.1
// and 3.7.2.1), so that the client's flow can end. Nothing else changes and
// the connection stays open.
func TestBadInput22_UnknownPacketIDs(t *testing.T) {
	s := startServer(t, nil)
	b := watch(t, s, "#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		code := packet.PacketIdentifierNotFound
		if v == packet.V311 {
			code = packet.Success
		}
		r := rawConnected(t, s.addr, v, "acks")
		r.write([]byte{0x40, 0x02, 0x00, 0x07}) // PUBACK 7
		r.write([]byte{0x40, 0x02, 0x00, 0x00}) // PUBACK 0
		r.write([]byte{0x70, 0x02, 0x00, 0x09}) // PUBCOMP 9
		r.write([]byte{0x50, 0x02, 0x00, 0x08}) // PUBREC 8
		r.write([]byte{0x62, 0x02, 0x00, 0x0A}) // PUBREL 10
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBREL || a.PacketID != 8 || a.ReasonCode != code {
			t.Fatalf("got %s id %d 0x%02X, want PUBREL 8 0x%02X", a.PacketType, a.PacketID, byte(a.ReasonCode), byte(code))
		}
		if a := next[*packet.Ack](r); a.PacketType != packet.PUBCOMP || a.PacketID != 10 || a.ReasonCode != code {
			t.Fatalf("got %s id %d 0x%02X, want PUBCOMP 10 0x%02X", a.PacketType, a.PacketID, byte(a.ReasonCode), byte(code))
		}
		r.ping()
		b.healthy(t)
	})
}
