package broker

import (
	"errors"
	"strings"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// handle dispatches one packet of an established connection. A returned
// error closes the connection with the error's reason code.
func (c *conn) handle(pk packet.Packet) error {
	if err := packet.Validate(pk, c.version, c.srv.lim); err != nil {
		return err
	}
	switch p := pk.(type) {
	case *packet.Publish:
		return c.handlePublish(p)
	case *packet.Ack:
		return c.handleAck(p)
	case *packet.Subscribe:
		return c.handleSubscribe(p)
	case *packet.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packet.Pingreq:
		c.enqueueFrom(c, outItem{pkt: pingresp})
		return nil
	case *packet.Disconnect:
		return c.handleDisconnect(p)
	case *packet.Connect:
		// [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
		return &packet.Error{Code: packet.ProtocolError, Reason: "second CONNECT on one connection"}
	case *packet.Auth:
		return c.handleReauth(p)
	}
	return &packet.Error{Code: packet.ProtocolError, Reason: "unexpected " + pk.Type().String() + " from a client"}
}

var pingresp = &packet.Pingresp{}

// handlePublish resolves the topic alias, applies the server's limits and
// the ACL, routes the message and acknowledges it.
func (c *conn) handlePublish(p *packet.Publish) error {
	cfg := &c.srv.cfg
	if err := c.resolveAlias(p); err != nil {
		return err
	}
	if p.QoS > cfg.MaximumQoS {
		// [MQTT-3.2.2-11]: QoS above Maximum QoS is a protocol error (0x9B).
		return &packet.Error{Code: packet.QoSNotSupported, Reason: "QoS above the server's maximum"}
	}
	if p.Retain && !cfg.RetainAvailable {
		return &packet.Error{Code: packet.RetainNotSupported, Reason: "retain not available"}
	}
	ss := c.sess
	if p.QoS == 2 {
		ss.mu.Lock()
		_, dup := ss.awaitingRel[p.PacketID]
		n := len(ss.awaitingRel)
		ss.mu.Unlock()
		if dup {
			// [MQTT-4.3.3-...]: a repeated QoS 2 id gets PUBREC again and is
			// not delivered twice.
			c.enqueueAck(packet.PUBREC, p.PacketID, packet.Success)
			return nil
		}
		if c.version == packet.V5 && n >= int(cfg.ReceiveMaximum) {
			return &packet.Error{Code: packet.ReceiveMaximumExceeded, Reason: "more unacknowledged QoS 2 PUBLISHes than Receive Maximum"}
		}
		if n >= cfg.MaxAwaitingRel {
			// Not the client's Receive Maximum (checked above) but the
			// server's own cap (BAD-INPUT row 21): 0x97 quota exceeded.
			return &packet.Error{Code: packet.QuotaExceeded, Reason: "too many QoS 2 messages awaiting PUBREL"}
		}
	}
	if cfg.MaxPublishRate > 0 {
		if refused, err := c.limitPublish(p); refused || err != nil {
			return err
		}
	}
	allowed := !isSysTopic(p.Topic) && (c.srv.acl == nil || c.srv.acl.CanPublish(&c.info, p.Topic))
	if !allowed {
		// BAD-INPUT row 13: $SYS and denied topics are not accepted; 5.0
		// says 0x87 in the acknowledgement, 3.1.1 acknowledges and drops.
		c.srv.log.Info("publish refused", "client_id", c.clientID, "topic", p.Topic)
		code := packet.NotAuthorized
		if c.version < packet.V5 {
			code = packet.Success
		}
		switch p.QoS {
		case 1:
			c.enqueueAck(packet.PUBACK, p.PacketID, code)
		case 2:
			if code == packet.Success {
				c.rememberRel(p.PacketID)
			}
			c.enqueueAck(packet.PUBREC, p.PacketID, code)
		}
		return nil
	}
	m := newMessage(p, c.clientID, time.Now())
	switch p.QoS {
	case 0:
		c.srv.publish(m, c, nil, ackTo{})
	case 1:
		c.srv.publish(m, c, nil, ackTo{c: c, t: packet.PUBACK, id: p.PacketID})
	case 2:
		// Method B ([MQTT-4.3.3-...]): deliver now, remember the id until
		// PUBREL so that a resent PUBLISH is not delivered twice.
		var extra []StoreOp
		if c.rememberRel(p.PacketID) {
			extra = []StoreOp{{Kind: OpAddRel, ClientID: ss.id, PacketID: p.PacketID}}
		}
		c.srv.publish(m, c, extra, ackTo{c: c, t: packet.PUBREC, id: p.PacketID})
	}
	return nil
}

// rememberRel records an inbound QoS 2 packet id until its PUBREL. It
// reports whether the session is stored (the id must be written too).
func (c *conn) rememberRel(id uint16) bool {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.awaitingRel == nil {
		ss.awaitingRel = make(map[uint16]struct{})
	}
	ss.awaitingRel[id] = struct{}{}
	return ss.stored()
}

// resolveAlias applies a 5.0 Topic Alias ([MQTT-3.3.2-12]): a topic with an
// alias sets it, an empty topic with an alias uses it.
func (c *conn) resolveAlias(p *packet.Publish) error {
	if c.version != packet.V5 || !p.Properties.Has(packet.PropTopicAlias) {
		return nil
	}
	a := p.Properties.TopicAlias
	if p.Topic != "" {
		if c.aliasesIn == nil {
			c.aliasesIn = make(map[uint16]string)
		}
		c.aliasesIn[a] = p.Topic
	} else {
		t, ok := c.aliasesIn[a]
		if !ok {
			return &packet.Error{Code: packet.ProtocolError, Reason: "topic alias not set on this connection"}
		}
		p.Topic = t
	}
	p.Properties.Clear(packet.PropTopicAlias)
	return nil
}

// handleAck processes PUBACK, PUBREC, PUBREL and PUBCOMP.
func (c *conn) handleAck(a *packet.Ack) error {
	ss := c.sess
	id := a.PacketID
	switch a.PacketType {
	case packet.PUBREL:
		ss.mu.Lock()
		_, ok := ss.awaitingRel[id]
		delete(ss.awaitingRel, id)
		stored := ss.stored()
		ss.mu.Unlock()
		code := packet.Success
		if !ok && c.version == packet.V5 {
			code = packet.PacketIdentifierNotFound // BAD-INPUT row 22
		}
		var ops []StoreOp
		if ok && stored {
			ops = []StoreOp{{Kind: OpClearRel, ClientID: ss.id, PacketID: id}}
		}
		c.afterDurable(ops, func() { c.enqueueAck(packet.PUBCOMP, id, code) })
	case packet.PUBACK, packet.PUBCOMP:
		ss.acknowledge(a.PacketType, id)
		c.srv.sweep(ss)
	case packet.PUBREC:
		if a.ReasonCode.IsError() {
			ss.dropInflight(id)
			c.srv.sweep(ss)
			return nil
		}
		found, ops := ss.acknowledge(packet.PUBREC, id)
		code := packet.Success
		if !found && c.version == packet.V5 {
			code = packet.PacketIdentifierNotFound
		}
		c.afterDurable(ops, func() { c.enqueueAck(packet.PUBREL, id, code) })
	}
	return nil
}

// handleDisconnect ends the connection on the client's request; 0x04 keeps
// the will ([MQTT-3.14.4-3]), a new session expiry applies from now on.
func (c *conn) handleDisconnect(d *packet.Disconnect) error {
	if c.version == packet.V5 && d.Properties.Has(packet.PropSessionExpiry) {
		ss := c.sess
		ss.mu.Lock()
		was := ss.expiry
		if was == 0 && d.Properties.SessionExpiry != 0 {
			ss.mu.Unlock()
			// [MQTT-3.14.2-2]: zero at CONNECT may not become non-zero.
			return &packet.Error{Code: packet.ProtocolError, Reason: "session expiry set at DISCONNECT after 0 at CONNECT"}
		}
		exp := d.Properties.SessionExpiry
		if max := c.srv.cfg.MaxSessionExpiry; max > 0 && exp > max {
			exp = max
		}
		ss.expiry = exp
		ss.persistent = exp > 0
		ss.mu.Unlock()
	}
	c.graceful = d.ReasonCode != packet.DisconnectWithWill
	c.closeNow()
	return errDisconnected
}

var errDisconnected = errors.New("client disconnected")

// handleReauth answers an AUTH after CONNACK (5.0 re-authentication).
func (c *conn) handleReauth(a *packet.Auth) error {
	if c.srv.auth == nil || a.Properties.AuthMethod == "" {
		return &packet.Error{Code: packet.ProtocolError, Reason: "AUTH without enhanced authentication"}
	}
	req := &AuthRequest{ClientInfo: c.info, Method: a.Properties.AuthMethod, Data: a.Properties.AuthData}
	res := c.srv.auth.Authenticate(req)
	switch res.Code {
	case packet.Success, packet.ContinueAuthentication:
		if res.Code == packet.Success {
			c.setAuthExpiry(res.Expiry) // the new credentials' deadline
		}
		out := &packet.Auth{ReasonCode: res.Code}
		out.Properties.AuthMethod = a.Properties.AuthMethod
		out.Properties.Set(packet.PropAuthMethod)
		if res.Data != nil {
			out.Properties.AuthData = res.Data
			out.Properties.Set(packet.PropAuthData)
		}
		c.enqueue(outItem{pkt: out})
		return nil
	}
	return &packet.Error{Code: packet.NotAuthorized, Reason: "re-authentication failed"}
}

// isSysTopic reports whether name is under $SYS, which only the server
// publishes to.
func isSysTopic(name string) bool {
	return name == "$SYS" || strings.HasPrefix(name, "$SYS/")
}
