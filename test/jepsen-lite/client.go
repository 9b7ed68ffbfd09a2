package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// Delivery is one PUBLISH a client received.
type Delivery struct {
	Topic    string
	Payload  string
	QoS      int
	Dup      bool
	Retain   bool
	PacketID int
}

// Will is a client's will message.
type Will struct {
	Topic   string
	Payload string
	QoS     int
	Delay   uint32 // 5.0 only
}

// ConnOpts describe one connection. Proto is 4 (3.1.1) or 5.
type ConnOpts struct {
	Proto      int
	ClientID   string
	CleanStart bool
	Expiry     uint32 // 5.0 session expiry in seconds
	KeepAlive  uint16
	Will       *Will
	OnDeliver  func(Delivery)
	// Session carries the 5.0 client's session state (QoS 2 packet ids it
	// has received and not yet seen released) from one connection to the
	// next; nil: a fresh one.
	Session *state.State
}

// Conn is one MQTT connection, 5.0 or 3.1.1. Reason codes are the
// broker's (3.1.1 SUBACK 0x80 included); -1 when the client could not
// tell.
type Conn interface {
	Subscribe(ctx context.Context, filter string, qos int) (int, error)
	Unsubscribe(ctx context.Context, filter string) (int, error)
	Publish(ctx context.Context, topic string, qos int, retain bool, payload []byte) (int, error)
	Disconnect() // a normal DISCONNECT
	Abort()      // close the socket without DISCONNECT
	Done() <-chan struct{}
}

// ConnackError is a refused CONNECT.
type ConnackError struct{ Code int }

func (e ConnackError) Error() string { return fmt.Sprintf("CONNACK %#x", e.Code) }

// Dial connects to addr and returns the connection and CONNACK's session
// present flag.
func Dial(ctx context.Context, addr string, o ConnOpts) (Conn, bool, error) {
	if o.KeepAlive == 0 {
		o.KeepAlive = 5
	}
	if o.Proto == 4 {
		return dial3(ctx, addr, o)
	}
	return dial5(ctx, addr, o)
}

type conn5 struct {
	c  *paho.Client
	nc net.Conn
}

func dial5(ctx context.Context, addr string, o ConnOpts) (Conn, bool, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	cfg := paho.ClientConfig{Conn: nc, PacketTimeout: 30 * time.Second}
	if o.Session != nil {
		cfg.Session = o.Session
	}
	if o.OnDeliver != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			o.OnDeliver(Delivery{Topic: p.Topic, Payload: string(p.Payload), QoS: int(p.QoS), Dup: p.Duplicate(),
				Retain: p.Retain, PacketID: int(p.PacketID)})
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: o.ClientID, CleanStart: o.CleanStart, KeepAlive: o.KeepAlive,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &o.Expiry}}
	if o.Will != nil {
		cp.WillMessage = &paho.WillMessage{Topic: o.Will.Topic, Payload: []byte(o.Will.Payload), QoS: byte(o.Will.QoS)}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &o.Will.Delay}
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			return nil, false, ConnackError{int(ca.ReasonCode)}
		}
		return nil, false, err
	}
	return &conn5{c: c, nc: nc}, ca.SessionPresent, nil
}

func (c *conn5) Subscribe(ctx context.Context, filter string, qos int) (int, error) {
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: byte(qos)}}})
	if sa != nil && len(sa.Reasons) == 1 {
		return int(sa.Reasons[0]), nil
	}
	return -1, err
}

func (c *conn5) Unsubscribe(ctx context.Context, filter string) (int, error) {
	ua, err := c.c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}})
	if ua != nil && len(ua.Reasons) == 1 {
		return int(ua.Reasons[0]), nil
	}
	return -1, err
}

func (c *conn5) Publish(ctx context.Context, topic string, qos int, retain bool, payload []byte) (int, error) {
	pr, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: byte(qos), Retain: retain, Payload: payload})
	if pr != nil {
		return int(pr.ReasonCode), nil
	}
	if err == nil && qos == 0 {
		return 0, nil
	}
	return -1, err
}

func (c *conn5) Disconnect()           { c.c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }
func (c *conn5) Abort()                { c.nc.Close() }
func (c *conn5) Done() <-chan struct{} { return c.c.Done() }

type conn3 struct {
	c    mqtt3.Client
	mu   sync.Mutex
	nc   net.Conn
	done chan struct{}
	once sync.Once
}

func dial3(ctx context.Context, addr string, o ConnOpts) (Conn, bool, error) {
	c3 := &conn3{done: make(chan struct{})}
	opts := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(o.ClientID).
		SetCleanSession(o.CleanStart).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetKeepAlive(time.Duration(o.KeepAlive) * time.Second).SetPingTimeout(3 * time.Second).
		SetOrderMatters(true).SetResumeSubs(false).SetConnectTimeout(5 * time.Second).SetWriteTimeout(10 * time.Second)
	opts.SetConnectionLostHandler(func(mqtt3.Client, error) { c3.once.Do(func() { close(c3.done) }) })
	opts.SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt3.ClientOptions) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", uri.Host)
		c3.mu.Lock()
		c3.nc = nc
		c3.mu.Unlock()
		return nc, err
	})
	if o.Will != nil {
		opts.SetWill(o.Will.Topic, o.Will.Payload, byte(o.Will.QoS), false)
	}
	if o.OnDeliver != nil {
		opts.SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
			o.OnDeliver(Delivery{Topic: m.Topic(), Payload: string(m.Payload()), QoS: int(m.Qos()), Dup: m.Duplicate(),
				Retain: m.Retained(), PacketID: int(m.MessageID())})
		})
	}
	c3.c = mqtt3.NewClient(opts)
	t := c3.c.Connect()
	if !waitToken(ctx, t) {
		c3.Abort()
		return nil, false, errors.New("connect timed out")
	}
	ct := t.(*mqtt3.ConnectToken)
	if ct.ReturnCode() != 0 {
		return nil, false, ConnackError{int(ct.ReturnCode())}
	}
	if err := t.Error(); err != nil {
		return nil, false, err
	}
	return c3, ct.SessionPresent(), nil
}

// waitToken waits for t or ctx.
func waitToken(ctx context.Context, t mqtt3.Token) bool {
	select {
	case <-t.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *conn3) Subscribe(ctx context.Context, filter string, qos int) (int, error) {
	t := c.c.Subscribe(filter, byte(qos), nil)
	if !waitToken(ctx, t) {
		return -1, ctx.Err()
	}
	if r, ok := t.(*mqtt3.SubscribeToken).Result()[filter]; ok && t.Error() == nil {
		return int(r), nil
	}
	return -1, t.Error()
}

func (c *conn3) Unsubscribe(ctx context.Context, filter string) (int, error) {
	t := c.c.Unsubscribe(filter)
	if !waitToken(ctx, t) {
		return -1, ctx.Err()
	}
	if t.Error() != nil {
		return -1, t.Error()
	}
	return 0, nil
}

func (c *conn3) Publish(ctx context.Context, topic string, qos int, retain bool, payload []byte) (int, error) {
	t := c.c.Publish(topic, byte(qos), retain, payload)
	if !waitToken(ctx, t) {
		return -1, ctx.Err()
	}
	if t.Error() != nil {
		return -1, t.Error()
	}
	return 0, nil
}

func (c *conn3) Disconnect() {
	c.c.Disconnect(100)
	c.once.Do(func() { close(c.done) })
}

func (c *conn3) Abort() {
	c.mu.Lock()
	if c.nc != nil {
		c.nc.Close()
	}
	c.mu.Unlock()
}

func (c *conn3) Done() <-chan struct{} { return c.done }
