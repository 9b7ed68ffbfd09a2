package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// testServer is a broker on a loopback port for one test.
type testServer struct {
	*Server
	addr string
}

// startServer runs a broker with cfg (DefaultConfig when nil) on
// 127.0.0.1:0 until the test ends.
func startServer(t testing.TB, cfg *Config, opts ...func(*Options)) *testServer {
	t.Helper()
	c := DefaultConfig()
	if cfg != nil {
		c = *cfg
	}
	o := Options{Logger: testLogger(t)}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return &testServer{Server: s, addr: ln.Addr().String()}
}

// testLogger logs to the test output when MQCLUSTER_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MQCLUSTER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// eventually retries fn until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// v5 is a paho.golang (MQTT 5.0) client with a channel of what it received.
type v5 struct {
	*paho.Client
	msgs        chan *paho.Publish
	disconnects chan *paho.Disconnect
	connack     *paho.Connack
}

// dialV5 connects a 5.0 client; modify adjusts the CONNECT.
func dialV5(t testing.TB, addr, clientID string, modify ...func(*paho.Connect, *paho.ClientConfig)) *v5 {
	t.Helper()
	c, err := tryDialV5(addr, clientID, modify...)
	if err != nil {
		t.Fatalf("connect %q: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func tryDialV5(addr, clientID string, modify ...func(*paho.Connect, *paho.ClientConfig)) (*v5, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &v5{msgs: make(chan *paho.Publish, 1000), disconnects: make(chan *paho.Disconnect, 4)}
	cfg := paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			r.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { r.disconnects <- d },
	}
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 0, CleanStart: true}
	for _, f := range modify {
		f(cp, &cfg)
	}
	r.Client = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := r.Connect(ctx, cp)
	r.connack = ca
	if err != nil {
		nc.Close()
		return r, err
	}
	return r, nil
}

func (c *v5) subscribe(t testing.TB, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	return c.subscribeWith(t, nil, opts...)
}

func (c *v5) subscribeWith(t testing.TB, props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: props})
	if err != nil && sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func (c *v5) publish(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil && r == nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// expect waits for the next received message.
func (c *v5) expect(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

// expectNone checks that nothing arrives for a short while.
func (c *v5) expectNone(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message on %q: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// v3 is a paho.mqtt.golang (MQTT 3.1.1) client with a channel of messages.
type v3 struct {
	mqtt3.Client
	msgs chan mqtt3.Message
}

func dialV3(t testing.TB, addr, clientID string, clean bool, modify ...func(*mqtt3.ClientOptions)) *v3 {
	t.Helper()
	r := &v3{msgs: make(chan mqtt3.Message, 1000)}
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetOrderMatters(true).SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { r.msgs <- m })
	for _, f := range modify {
		f(o)
	}
	r.Client = mqtt3.NewClient(o)
	tok := r.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 connect %q: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { r.Disconnect(50) })
	return r
}

func (c *v3) sub(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscribe %q: %v", filter, tok.Error())
	}
}

func (c *v3) pub(t testing.TB, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 publish %q: %v", topic, tok.Error())
	}
}

func (c *v3) expect(t testing.TB) mqtt3.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

// raw is a connection that speaks packets byte by byte, for what client
// libraries never send.
type raw struct {
	t  testing.TB
	nc net.Conn
	rd *packet.Reader
	v  packet.Version
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc, rd: packet.NewReader(nc, 0)}
}

// connect sends a CONNECT and expects a successful CONNACK.
func (r *raw) connect(v packet.Version, clientID string, modify ...func(*packet.Connect)) *packet.Connack {
	r.t.Helper()
	name := "MQTT"
	if v == packet.V31 {
		name = "MQIsdp"
	}
	cp := &packet.Connect{ProtocolName: name, Version: v, CleanStart: true, KeepAlive: 30, ClientID: clientID}
	for _, f := range modify {
		f(cp)
	}
	r.v = v
	r.rd.SetVersion(v)
	r.send(cp)
	pk := r.read()
	ca, ok := pk.(*packet.Connack)
	if !ok || ca.ReasonCode != packet.Success {
		r.t.Fatalf("connect: got %#v", pk)
	}
	return ca
}

func (r *raw) send(p packet.Packet) {
	r.t.Helper()
	b, err := p.Append(nil, r.v)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet within 5 s.
func (r *raw) read() packet.Packet {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	pk, err := r.rd.ReadPacket()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return pk
}

// readErr returns the next packet or the error that ended the connection.
func (r *raw) readErr(d time.Duration) (packet.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(d))
	return r.rd.ReadPacket()
}

// expectClosed checks that the server closes the connection (after any
// packets, which it returns).
func (r *raw) expectClosed(d time.Duration) []packet.Packet {
	r.t.Helper()
	var got []packet.Packet
	for {
		pk, err := r.readErr(d)
		if err == nil {
			got = append(got, pk)
			continue
		}
		if err == io.EOF || isReset(err) {
			return got
		}
		r.t.Fatalf("connection not closed: %v (got %v)", err, got)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}
