package store

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// wire is a bare MQTT 5.0 client on one connection.
type wire struct {
	t  *testing.T
	nc net.Conn
	rd *packet.Reader
}

func dialWire(t *testing.T, addr string) *wire {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rd := packet.NewReader(nc, 1<<20)
	rd.SetVersion(packet.V5)
	return &wire{t: t, nc: nc, rd: rd}
}

func (w *wire) send(p packet.Packet) {
	w.t.Helper()
	b, err := p.Append(nil, packet.V5)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.nc.Write(b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wire) read() packet.Packet {
	w.t.Helper()
	w.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := w.rd.ReadPacket()
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *wire) connect(id string, clean bool) {
	w.t.Helper()
	cp := &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: clean, ClientID: id}
	cp.Properties.SessionExpiry = 3600
	cp.Properties.Set(packet.PropSessionExpiry)
	w.send(cp)
	if ca, ok := w.read().(*packet.Connack); !ok || ca.ReasonCode != packet.Success {
		w.t.Fatalf("CONNACK: %#v", ca)
	}
}

// After a restart, a persistent session's stored messages go out again;
// only those that were in flight before — the first MaxInflight, which may
// have reached the client — carry DUP ([MQTT-3.3.1-1]); the others are
// first deliveries, with DUP 0 ([MQTT-3.3.1-2] for what was never sent).
func TestRestoredMessagesResentWithDupOnlyIfInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	cfg := broker.DefaultConfig()
	cfg.MaxInflight = 4
	start := func() (*broker.Server, *Store, string) {
		st, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := broker.New(cfg, broker.Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		return srv, st, ln.Addr().String()
	}
	stop := func(srv *broker.Server, st *Store) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
		st.Close()
	}

	srv, st, addr := start()
	sub := dialWire(t, addr)
	sub.connect("resend", true)
	sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "d/#", Options: packet.SubOptions{QoS: 1}}}})
	if _, ok := sub.read().(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	pub := dialWire(t, addr)
	pub.connect("resend-pub", true)
	for i := range 10 {
		pub.send(&packet.Publish{QoS: 1, Topic: "d/x", PacketID: uint16(i + 1), Payload: []byte(fmt.Sprintf("m-%d", i))})
		if _, ok := pub.read().(*packet.Ack); !ok {
			t.Fatal("no PUBACK")
		}
	}
	// The subscriber got the first four and acknowledges none.
	for i := range 4 {
		if p, ok := sub.read().(*packet.Publish); !ok || p.Dup || string(p.Payload) != fmt.Sprintf("m-%d", i) {
			t.Fatalf("first delivery %d: %#v", i, p)
		}
	}
	stop(srv, st)

	srv, st, addr = start()
	defer stop(srv, st)
	again := dialWire(t, addr)
	again.connect("resend", false)
	for i := range 10 {
		p, ok := again.read().(*packet.Publish)
		if !ok || string(p.Payload) != fmt.Sprintf("m-%d", i) {
			t.Fatalf("after the restart, delivery %d: %#v", i, p)
		}
		if want := i < 4; p.Dup != want {
			t.Errorf("after the restart, %s: DUP %v, want %v", p.Payload, p.Dup, want)
		}
		again.send(&packet.Ack{PacketType: packet.PUBACK, PacketID: p.PacketID})
	}
}
