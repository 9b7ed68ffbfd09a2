package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Helpers of the BAD-INPUT.md tests (badinput_*_test.go): packets built byte
// by byte, the whole answer a raw connection gets, bystanders that must see
// nothing, the health check after bad input, and heap measurements.

// bothVersions runs fn as a subtest for MQTT 5.0 and for MQTT 3.1.1.
func bothVersions(t *testing.T, fn func(t *testing.T, v packet.Version)) {
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(v.String(), func(t *testing.T) { fn(t, v) })
	}
}

// pkt is a control packet: the first byte (type and flags), a minimally
// encoded Remaining Length, then the body, which is parts one after another.
func pkt(first byte, parts ...[]byte) []byte {
	body := cat(parts...)
	return cat([]byte{first}, vbi(len(body)), body)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// vbi is n as a minimal Variable Byte Integer.
func vbi(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7F)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// str is a length-prefixed string field carrying s byte for byte, whether or
// not it is valid UTF-8.
func str(s string) []byte { return cat(u16(uint16(len(s))), []byte(s)) }

// props is a 5.0 property block: its length, then the properties.
func props(parts ...[]byte) []byte {
	b := cat(parts...)
	return cat(vbi(len(b)), b)
}

// noProps is an empty property block in 5.0 and nothing before 5.0.
func noProps(v packet.Version) []byte {
	if v == packet.V5 {
		return []byte{0}
	}
	return nil
}

// userProp is one User Property (0x26).
func userProp(k, v string) []byte { return cat([]byte{0x26}, str(k), str(v)) }

// connectMsg is a CONNECT with protocol name "MQTT" and level v, the connect
// flags byte, a keep-alive of ka seconds, in 5.0 the property block cprops
// (empty when nil), then the payload (client id first).
func connectMsg(v packet.Version, flags byte, ka uint16, cprops []byte, payload ...[]byte) []byte {
	vh := cat(str("MQTT"), []byte{byte(v), flags}, u16(ka))
	if v == packet.V5 {
		if cprops == nil {
			cprops = []byte{0}
		}
		vh = append(vh, cprops...)
	}
	return pkt(0x10, vh, cat(payload...))
}

// cleanConnect is a well-formed clean-start CONNECT with client id id.
func cleanConnect(v packet.Version, id string) []byte {
	return connectMsg(v, 0x02, 30, nil, str(id))
}

// rawConnected is a raw connection with a completed CONNECT of version v
// (clean start, keep-alive 30).
func rawConnected(t *testing.T, addr string, v packet.Version, id string, modify ...func(*packet.Connect)) *raw {
	t.Helper()
	r := dialRaw(t, addr)
	r.connect(v, id, modify...)
	return r
}

// answer reads everything the broker sends, decoded as version v, until it
// closes the connection. It fails when the connection is still open after d
// or when the bytes do not decode as v (a 3.1.1 CONNACK sent to a 5.0 client
// fails, and the other way round).
func (r *raw) answer(v packet.Version, d time.Duration) []packet.Packet {
	r.t.Helper()
	r.rd.SetVersion(v)
	deadline := time.Now().Add(d)
	var got []packet.Packet
	for {
		r.nc.SetReadDeadline(deadline)
		pk, err := r.rd.ReadPacket()
		switch {
		case err == nil:
			got = append(got, pk)
		case errors.Is(err, io.EOF) || isReset(err):
			return got
		case errors.Is(err, os.ErrDeadlineExceeded):
			r.t.Fatalf("connection still open after %v; got %s", d, describe(got))
		default:
			r.t.Fatalf("answer does not decode as %s after %s: %v", v, describe(got), err)
		}
	}
}

// describe lists packets with their reason codes for failure messages.
func describe(pks []packet.Packet) string {
	if len(pks) == 0 {
		return "nothing"
	}
	var s []string
	for _, p := range pks {
		switch p := p.(type) {
		case *packet.Connack:
			s = append(s, fmt.Sprintf("CONNACK 0x%02X", byte(p.ReasonCode)))
		case *packet.Disconnect:
			s = append(s, fmt.Sprintf("DISCONNECT 0x%02X", byte(p.ReasonCode)))
		case *packet.Ack:
			s = append(s, fmt.Sprintf("%s id %d 0x%02X", p.PacketType, p.PacketID, byte(p.ReasonCode)))
		case *packet.Suback:
			s = append(s, fmt.Sprintf("SUBACK % X", p.ReasonCodes))
		case *packet.Publish:
			s = append(s, fmt.Sprintf("PUBLISH %q", p.Topic))
		default:
			s = append(s, p.Type().String())
		}
	}
	return strings.Join(s, ", ")
}

// expectDisconnect checks the whole answer to bad input on an established
// connection: DISCONNECT with code, then the close, in 5.0
// ([MQTT-4.13.1-1]); the close alone in 3.1.1 (section 4.8), which has no
// server DISCONNECT.
func (r *raw) expectDisconnect(code packet.ReasonCode) {
	r.t.Helper()
	got := r.answer(r.v, 5*time.Second)
	if r.v < packet.V5 {
		if len(got) != 0 {
			r.t.Fatalf("3.1.1: got %s before the close, want nothing", describe(got))
		}
		return
	}
	if d, ok := only[*packet.Disconnect](got); !ok || d.ReasonCode != code {
		r.t.Fatalf("got %s, want DISCONNECT 0x%02X then the close", describe(got), byte(code))
	}
}

// expectConnack checks the whole answer to a refused CONNECT: one CONNACK
// with code in the form of version v, then the close.
func (r *raw) expectConnack(v packet.Version, code packet.ReasonCode) {
	r.t.Helper()
	got := r.answer(v, 5*time.Second)
	if ca, ok := only[*packet.Connack](got); !ok || ca.ReasonCode != code {
		r.t.Fatalf("got %s, want CONNACK 0x%02X (%s form) then the close", describe(got), byte(code), v)
	}
}

// expectSilentClose checks that the broker closes the connection within d
// without sending anything.
func (r *raw) expectSilentClose(d time.Duration) {
	r.t.Helper()
	if got := r.answer(packet.V5, d); len(got) != 0 {
		r.t.Fatalf("got %s, want the close alone", describe(got))
	}
}

// expectBadConnect checks the answer to a malformed CONNECT of version v:
// CONNACK with code then the close in 5.0 ([MQTT-3.1.4-1], section 4.13);
// the close alone in 3.1.1 ([MQTT-3.1.4-1] of 3.1.1).
func (r *raw) expectBadConnect(v packet.Version, code packet.ReasonCode) {
	r.t.Helper()
	if v == packet.V5 {
		r.expectConnack(v, code)
		return
	}
	r.expectSilentClose(5 * time.Second)
}

// only returns the single packet of pks when there is exactly one, of type P.
func only[P packet.Packet](pks []packet.Packet) (P, bool) {
	var zero P
	if len(pks) != 1 {
		return zero, false
	}
	p, ok := pks[0].(P)
	return p, ok
}

// next reads the next packet and checks its type.
func next[P packet.Packet](r *raw) P {
	r.t.Helper()
	pk := r.read()
	p, ok := pk.(P)
	if !ok {
		r.t.Fatalf("got %s, want %T", describe([]packet.Packet{pk}), p)
	}
	return p
}

// ping checks that the connection is open and every answer to what came
// before has been read: the next packet must be the PINGRESP.
func (r *raw) ping() {
	r.t.Helper()
	r.write([]byte{0xC0, 0x00})
	next[*packet.Pingresp](r)
}

// bystanders are clients connected before the bad input: one 5.0 and one
// 3.1.1 client, both subscribed to a filter ("#" unless the test floods).
// BAD-INPUT: other clients see nothing — no message and no disconnect.
type bystanders struct {
	s      *testServer
	five   *v5
	three  *v3
	lost   chan string
	checks int
}

// watch connects the bystanders of s, subscribed to filter at QoS 1.
func watch(t *testing.T, s *testServer, filter string) *bystanders {
	t.Helper()
	b := &bystanders{s: s, lost: make(chan string, 8)}
	report := func(what string) {
		select {
		case b.lost <- what:
		default:
		}
	}
	b.five = dialV5(t, s.addr, "bystander5", func(_ *paho.Connect, cfg *paho.ClientConfig) {
		cfg.OnClientError = func(err error) { report("5.0 bystander: " + err.Error()) }
	})
	b.five.subscribe(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
	b.three = dialV3(t, s.addr, "bystander3", true, func(o *mqtt3.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt3.Client, err error) { report("3.1.1 bystander: " + err.Error()) })
	})
	b.three.sub(t, filter, 1)
	return b
}

// expect checks that the next message both bystanders received is on topic.
func (b *bystanders) expect(t *testing.T, topic string) {
	t.Helper()
	if m := b.five.expect(t); m.Topic != topic {
		t.Fatalf("5.0 bystander got %q (%q), want %q", m.Topic, m.Payload, topic)
	}
	if m := b.three.expect(t); m.Topic() != topic {
		t.Fatalf("3.1.1 bystander got %q (%q), want %q", m.Topic(), m.Payload(), topic)
	}
}

// healthy checks the broker after bad input: a fresh 5.0 client connects,
// subscribes and receives what it publishes; the bystanders receive that
// message too as the first thing since the bad input (so nothing of it was
// relayed to them) and were never disconnected.
func (b *bystanders) healthy(t *testing.T) {
	t.Helper()
	b.checks++
	id := fmt.Sprintf("fresh-%d", b.checks)
	topic := "health/" + id
	c := dialV5(t, b.s.addr, id)
	c.subscribe(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
	c.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("ok")})
	if m := c.expect(t); m.Topic != topic || string(m.Payload) != "ok" {
		t.Fatalf("fresh client got %q %q", m.Topic, m.Payload)
	}
	c.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, func() error { // leave the broker as it was
		if b.s.session(id) != nil {
			return fmt.Errorf("the session of %s outlives its clean-start connection", id)
		}
		return nil
	})
	b.expect(t, topic)
	select {
	case d := <-b.five.disconnects:
		t.Fatalf("5.0 bystander got DISCONNECT 0x%02X", d.ReasonCode)
	case what := <-b.lost:
		t.Fatalf("bystander lost its connection: %s", what)
	default:
	}
	if !b.three.IsConnectionOpen() {
		t.Fatal("3.1.1 bystander is not connected")
	}
}

// sessionIDs returns the client ids of the broker's sessions.
func (s *testServer) sessionIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	return ids
}

// session returns the session of id, nil when there is none.
func (s *testServer) session(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// connCount is the number of connections the broker holds, established or not.
func (s *testServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// noSession fails if the broker holds a session for id.
func (s *testServer) noSession(t *testing.T, id string) {
	t.Helper()
	if s.session(id) != nil {
		t.Fatalf("the broker holds a session for %q", id)
	}
}

// liveHeap is the heap in use after garbage collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// allocated is the total of bytes ever allocated on the heap: its growth
// over a step bounds what the step allocated, freed or not.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

const mib = 1 << 20

// growth returns how far after exceeds before (0 when it does not) and logs
// it as what, for the record of a -v run.
func growth(t *testing.T, what string, before, after uint64) uint64 {
	t.Helper()
	var g uint64
	if after > before {
		g = after - before
	}
	t.Logf("%s: %d KiB", what, g>>10)
	return g
}
