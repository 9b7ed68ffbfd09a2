package node

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// deviceState is the client side of an MQTT 5.0 session as a device keeps
// it across connections: the QoS 2 packet ids it has received and not yet
// seen released ([MQTT-4.3.3-9]: a PUBLISH with such an id is not delivered
// again), and what the application got.
type deviceState struct {
	mu       sync.Mutex
	awaiting map[uint16]bool
	got      map[string]int // payload -> deliveries to the application
	order    []string
	// unacked, then lose, make the next PUBLISHes arrive without their
	// acknowledgement reaching the server, then never arrive (the
	// connection is dying).
	unacked, lose int
}

func newDeviceState() *deviceState {
	return &deviceState{awaiting: map[uint16]bool{}, got: map[string]int{}}
}

func (d *deviceState) deliveries() (map[string]int, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	got := make(map[string]int, len(d.got))
	for k, v := range d.got {
		got[k] = v
	}
	return got, append([]string(nil), d.order...)
}

// rawConn is one connection of a device, spoken with the broker's codec.
type rawConn struct {
	t      *testing.T
	nc     net.Conn
	dev    *deviceState
	wmu    sync.Mutex
	subact chan *packet.Suback
	disc   chan packet.ReasonCode
	done   chan struct{}
}

// rawConnect connects a device with client id id and session expiry
// expiry; it returns the connection and its CONNACK.
func rawConnect(t *testing.T, addr, id string, dev *deviceState, cleanStart bool, expiry uint32) (*rawConn, *packet.Connack) {
	t.Helper()
	return rawConnectOpts(t, addr, id, dev, func(cp *packet.Connect) {
		cp.CleanStart = cleanStart
		cp.Properties.SessionExpiry = expiry
		cp.Properties.Set(packet.PropSessionExpiry)
	})
}

// rawConnectOpts connects a device with the CONNECT that opts shapes.
func rawConnectOpts(t *testing.T, addr, id string, dev *deviceState, opts func(*packet.Connect)) (*rawConn, *packet.Connack) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawConn{t: t, nc: nc, dev: dev, subact: make(chan *packet.Suback, 4),
		disc: make(chan packet.ReasonCode, 1), done: make(chan struct{})}
	t.Cleanup(func() { nc.Close() })
	cp := &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true, KeepAlive: 30, ClientID: id}
	opts(cp)
	c.write(cp)
	rd := packet.NewReader(nc, 1<<20)
	rd.SetVersion(packet.V5)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	pk, err := rd.ReadPacket()
	if err != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, err)
	}
	nc.SetReadDeadline(time.Time{})
	ack, ok := pk.(*packet.Connack)
	if !ok {
		t.Fatalf("connect %s: got %v, want CONNACK", id, pk.Type())
	}
	if ack.ReasonCode == packet.Success {
		go c.readLoop(rd)
	} else {
		close(c.done)
	}
	return c, ack
}

func (c *rawConn) write(p packet.Packet) {
	b, err := p.Append(nil, packet.V5)
	if err != nil {
		c.t.Errorf("encode %v: %v", p.Type(), err)
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.Write(b)
}

func (c *rawConn) readLoop(rd *packet.Reader) {
	defer close(c.done)
	for {
		pk, err := rd.ReadPacket()
		if err != nil {
			return
		}
		switch p := pk.(type) {
		case *packet.Publish:
			c.onPublish(p)
		case *packet.Ack:
			if p.PacketType == packet.PUBREL {
				c.dev.mu.Lock()
				delete(c.dev.awaiting, p.PacketID)
				c.dev.mu.Unlock()
				c.write(&packet.Ack{PacketType: packet.PUBCOMP, PacketID: p.PacketID})
			}
		case *packet.Suback:
			c.subact <- p
		case *packet.Disconnect:
			c.disc <- p.ReasonCode
		}
	}
}

func (c *rawConn) onPublish(p *packet.Publish) {
	d := c.dev
	d.mu.Lock()
	silent := d.unacked > 0
	if silent {
		d.unacked--
	} else if d.lose > 0 {
		d.lose--
		d.mu.Unlock()
		return
	}
	deliver := p.QoS < 2 || !d.awaiting[p.PacketID]
	if p.QoS == 2 {
		d.awaiting[p.PacketID] = true
	}
	if deliver {
		d.got[string(p.Payload)]++
		d.order = append(d.order, string(p.Payload))
	}
	d.mu.Unlock()
	if silent {
		return
	}
	switch p.QoS {
	case 1:
		c.write(&packet.Ack{PacketType: packet.PUBACK, PacketID: p.PacketID})
	case 2:
		c.write(&packet.Ack{PacketType: packet.PUBREC, PacketID: p.PacketID})
	}
}

func (c *rawConn) subscribe(filter string, qos byte) {
	c.t.Helper()
	c.write(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}})
	select {
	case ack := <-c.subact:
		if len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packet.ReasonCode(qos) {
			c.t.Fatalf("SUBACK %v, want granted QoS %d", ack.ReasonCodes, qos)
		}
	case <-time.After(10 * time.Second):
		c.t.Fatal("no SUBACK")
	}
}

// disconnect ends the connection normally (no will).
func (c *rawConn) disconnect() {
	c.write(&packet.Disconnect{ReasonCode: packet.Success})
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.t.Fatal("connection not closed after DISCONNECT")
	}
}
