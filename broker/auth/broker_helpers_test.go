package auth

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/broker"
)

// startBroker runs a broker that authenticates and authorizes with a on
// 127.0.0.1:0 until the test ends, and returns its address.
func startBroker(t testing.TB, a *Auth) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("MQCLUSTER_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := broker.New(broker.DefaultConfig(), broker.Options{Auth: a, ACL: a, Logger: log})
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
	return ln.Addr().String()
}

// v5 is a paho.golang (MQTT 5.0) client with what the server sent it.
type v5 struct {
	*paho.Client
	msgs        chan *paho.Publish
	disconnects chan *paho.Disconnect
}

// dialV5 connects with user name and password (each sent when not empty)
// and returns the client, the CONNACK and the connect error.
func dialV5(t testing.TB, addr, clientID, user, password string, modify ...func(*paho.Connect)) (*v5, *paho.Connack, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &v5{msgs: make(chan *paho.Publish, 100), disconnects: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disconnects <- d },
	})
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 0, CleanStart: true,
		Username: user, UsernameFlag: user != "", Password: []byte(password), PasswordFlag: password != ""}
	for _, f := range modify {
		f(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		return c, ca, err
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ca, nil
}

// mustV5 connects and fails the test unless the server admits the client.
func mustV5(t testing.TB, addr, clientID, user, password string, modify ...func(*paho.Connect)) *v5 {
	t.Helper()
	c, _, err := dialV5(t, addr, clientID, user, password, modify...)
	if err != nil {
		t.Fatalf("connect %q as %q: %v", clientID, user, err)
	}
	return c
}

// subscribe returns the SUBACK reason codes.
func (c *v5) subscribe(t testing.TB, filters ...string) []byte {
	t.Helper()
	opts := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		opts[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

// publish sends a QoS 1 message and returns the PUBACK reason code.
func (c *v5) publish(t testing.TB, topic, payload string, retain bool) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload)})
	if r == nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return r.ReasonCode
}

// next returns the next message, or nil after d.
func (c *v5) next(d time.Duration) *paho.Publish {
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(d):
		return nil
	}
}

// dialV3 connects a paho.mqtt.golang (MQTT 3.1.1) client with user name
// and password; it returns the client with its messages and the connect
// error.
func dialV3(t testing.TB, addr, clientID, user, password string) (mqtt3.Client, chan mqtt3.Message, error) {
	t.Helper()
	msgs := make(chan mqtt3.Message, 100)
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername(user).SetPassword(password).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { msgs <- m })
	c := mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return c, msgs, errors.New("3.1.1 connect timed out")
	}
	if err := tok.Error(); err != nil {
		return c, msgs, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, msgs, nil
}

// wait waits for a 3.1.1 token and fails the test on an error.
func wait(t testing.TB, tok mqtt3.Token) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1: %v", tok.Error())
	}
}
