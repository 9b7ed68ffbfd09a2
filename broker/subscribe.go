package broker

import (
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// handleSubscribe grants or refuses each filter on its own ([MQTT-3.8.4-...]
// per-filter reason codes), answers SUBACK, then sends the retained messages
// the Retain Handling option asks for ([MQTT-3.3.1-9..11]).
func (c *conn) handleSubscribe(p *packet.Subscribe) error {
	cfg := &c.srv.cfg
	if p.Properties.Has(packet.PropSubscriptionID) && !cfg.SubscriptionIdentifiers {
		return &packet.Error{Code: packet.SubscriptionIdentifiersNotSupported, Reason: "subscription identifiers are disabled"}
	}
	var subID uint32
	if len(p.Properties.SubscriptionIDs) > 0 {
		subID = p.Properties.SubscriptionIDs[0]
	}
	ss := c.sess
	codes := make([]packet.ReasonCode, len(p.Subscriptions))
	type retainedReq struct {
		filter string
		opts   packet.SubOptions
		qos    byte
	}
	var wantRetained []retainedReq
	for i, sub := range p.Subscriptions {
		code := c.grant(sub)
		codes[i] = code
		if code.IsError() {
			continue
		}
		group, real, shared, _ := topic.ParseShare(sub.Filter)
		sub.Options.QoS = byte(code)
		ss.mu.Lock()
		if ss.ended {
			ss.mu.Unlock()
			return errDisconnected // taken over with Clean Start meanwhile
		}
		_, existed := ss.subs[sub.Filter]
		ss.subs[sub.Filter] = Subscription{Filter: sub.Filter, Group: group, Real: real, Opts: sub.Options, SubID: subID}
		ss.nsubs.Store(int32(len(ss.subs)))
		// The trie changes under ss.mu so that a concurrent end of the
		// session cannot leave the entry behind.
		replaced, _ := c.srv.subs.Add(real, group, ss.id, subValue{sess: ss, opts: sub.Options, subID: subID})
		first := !replaced && c.srv.routeAdded(real, group)
		ss.mu.Unlock()
		if first {
			// The first local subscriber of the filter (or member of the
			// group): the SUBACK waits until every reachable node forwards
			// its messages here.
			if err := c.srv.setRouteOf(real, group, 1); err != nil {
				// Undone here only: the cluster that could not record the
				// route would not record its removal either (a route that
				// was recorded after all only costs forwarding).
				c.dropSubscription(sub.Filter, false)
				codes[i] = packet.ImplementationSpecificError
				continue
			}
		}
		// Retained messages are not sent for shared subscriptions
		// ([MQTT-3.8.4-...]); Retain Handling 1 sends them only for a new
		// subscription, 2 never.
		rh := sub.Options.RetainHandling
		if !shared && (rh == 0 || rh == 1 && !existed) {
			wantRetained = append(wantRetained, retainedReq{filter: real, opts: sub.Options, qos: byte(code)})
		}
	}
	if c.version < packet.V5 {
		for i, code := range codes {
			if code.IsError() {
				codes[i] = packet.UnspecifiedError // 3.1.1 has only 0x80 for failure
			}
		}
	}
	// The SUBACK leaves once the subscription is durable.
	suback := &packet.Suback{PacketID: p.PacketID, ReasonCodes: codes}
	c.afterDurable(c.sessionOps(), func() { c.enqueue(outItem{pkt: suback}) })
	c.recordSubscriptions()
	var ids []uint32
	if subID != 0 {
		ids = []uint32{subID}
	}
	sc := scratchPool.Get().(*routeScratch)
	defer scratchPool.Put(sc)
	for _, r := range wantRetained {
		for _, m := range c.srv.retainedFor(r.filter) {
			if c.srv.acl != nil && !c.srv.acl.CanRead(&c.info, m.Topic) {
				continue
			}
			// [MQTT-3.3.1-9]: a retained message sent because of a new
			// subscription carries RETAIN 1.
			t := target{sess: ss, qos: min(m.QoS, r.qos), retain: true, subIDs: ids}
			c.srv.dispatch(m, []target{t}, c, nil, ackTo{}, false, sc)
		}
	}
	return nil
}

// sessionOps is the store write of this connection's session record when
// the session is stored.
func (c *conn) sessionOps() []StoreOp {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.stored() {
		return nil
	}
	return []StoreOp{ss.sessionOp(0)}
}

// grant decides one filter: the granted QoS, or the failure reason code.
func (c *conn) grant(sub packet.Subscription) packet.ReasonCode {
	cfg := &c.srv.cfg
	code := packet.FilterCode(sub, c.version, c.srv.lim)
	if code.IsError() {
		return code
	}
	group, real, shared, err := topic.ParseShare(sub.Filter)
	if err != nil {
		return packet.TopicFilterInvalid
	}
	_ = group
	if shared && !cfg.SharedSubscriptions {
		return packet.SharedSubscriptionsNotSupported
	}
	if !cfg.WildcardSubscriptions && hasWildcard(real) {
		return packet.WildcardSubscriptionsNotSupported
	}
	if c.srv.acl != nil && !c.srv.acl.CanSubscribe(&c.info, sub.Filter) {
		// 0x80, not 0x87: both are allowed in a 5.0 SUBACK, and 0x80 is
		// what 5.0 client test suites (paho's interoperability tests)
		// expect for a refused filter; 3.1.1 has only 0x80.
		return packet.UnspecifiedError
	}
	return packet.ReasonCode(min(sub.Options.QoS, cfg.MaximumQoS))
}

func hasWildcard(f string) bool {
	for i := 0; i < len(f); i++ {
		if f[i] == '+' || f[i] == '#' {
			return true
		}
	}
	return false
}

// handleUnsubscribe removes each filter; 5.0 gets a code per filter.
func (c *conn) handleUnsubscribe(p *packet.Unsubscribe) error {
	codes := make([]packet.ReasonCode, len(p.Filters))
	for i, f := range p.Filters {
		if !c.dropSubscription(f, true) {
			codes[i] = packet.NoSubscriptionExisted
		}
	}
	ack := &packet.Unsuback{PacketID: p.PacketID}
	if c.version == packet.V5 {
		ack.ReasonCodes = codes
	}
	c.afterDurable(c.sessionOps(), func() { c.enqueue(outItem{pkt: ack}) })
	c.recordSubscriptions()
	return nil
}

// dropSubscription removes one of the session's subscriptions; when it was
// the node's last subscriber of the filter (or group) and cluster is set,
// the cluster route goes too.
func (c *conn) dropSubscription(filter string, cluster bool) bool {
	ss := c.sess
	ss.mu.Lock()
	sub, ok := ss.subs[filter]
	last := false
	if ok {
		delete(ss.subs, filter)
		ss.nsubs.Store(int32(len(ss.subs)))
		removed, _ := c.srv.subs.Remove(sub.Real, sub.Group, ss.id)
		last = removed && c.srv.routeRemoved(sub.Real, sub.Group)
	}
	ss.mu.Unlock()
	if last && cluster {
		if err := c.srv.setRouteOf(sub.Real, sub.Group, 0); err != nil {
			c.srv.log.Warn("route not removed", "topic", sub.Real, "err", err)
		}
	}
	return ok
}
