package broker

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// While the broker is unavailable (a cluster node catching up with the
// cluster's state) a new client's CONNECT is refused with 0x88 Server
// unavailable (3.1.1: return code 3, [MQTT-3.2.2-6]); connected clients
// keep their connections, and clients are admitted again once it ends.
func TestUnavailableRefusesNewClients(t *testing.T) {
	cfg := DefaultConfig()
	s := startServer(t, &cfg)
	sub := dialV5(t, s.addr, "connected-before")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "a/b", QoS: 1})

	s.SetUnavailable("catching up")
	if s.Available() {
		t.Fatal("Available() after SetUnavailable")
	}
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		r := dialRaw(t, s.addr)
		r.v = v
		r.rd.SetVersion(v)
		r.send(&packet.Connect{ProtocolName: "MQTT", Version: v, CleanStart: true, KeepAlive: 30, ClientID: "refused"})
		ca, ok := r.read().(*packet.Connack)
		want := packet.ServerUnavailable
		if v < packet.V5 {
			want = packet.ServerUnavailable.V3ConnackCode()
		}
		if !ok || ca.ReasonCode != want {
			t.Fatalf("%v CONNECT while unavailable: got %#v, want CONNACK %#x", v, ca, byte(want))
		}
		r.expectClosed(2 * time.Second)
	}

	// Admitted again; the client connected before was served throughout.
	s.SetUnavailable("")
	p := dialV5(t, s.addr, "publisher")
	p.publish(t, &paho.Publish{Topic: "a/b", QoS: 1, Payload: []byte("still served")})
	if m := sub.expect(t); string(m.Payload) != "still served" {
		t.Fatalf("subscriber connected before got %q", m.Payload)
	}
}
