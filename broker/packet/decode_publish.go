package packet

import "unsafe"

// DecodePublish decodes the body of a PUBLISH packet with fixed-header flags
// flags into p, which the caller may reuse from packet to packet: every field
// of p is overwritten.
//
// It makes one allocation: a copy of body that the packet owns from then on.
// Topic and the string properties are views of that copy (unsafe.String),
// Payload and Correlation Data capacity-limited sub-slices of it, so body
// itself is never kept. The slices of repeated properties (User Property,
// Subscription Identifier) cost one allocation each when present. Because
// they share the copy, the topic keeps the payload's memory alive: a caller
// that stores the topic for long (a retained-message index) and drops the
// payload should strings.Clone it.
//
// It fails with a malformed-packet *Error for QoS 3 [MQTT-3.3.1-4], a body
// truncated before the end of the topic or the packet identifier, a packet
// identifier of 0 with QoS > 0 ([MQTT-2.3.1-1] in 3.1.1, [MQTT-2.2.1-3] in
// 5.0), a topic that is not a valid UTF-8 string, or bad properties (see
// Decode). On failure the contents of p are unspecified. Topic rules (no
// wildcards, zero length with a Topic Alias, DUP at QoS 0) are Validate's.
func DecodePublish(p *Publish, flags byte, body []byte, v Version) error {
	return decodePublish(p, flags, body, v, false)
}

// decodePublish is DecodePublish; with owned set, body already belongs to
// the packet (a body buffer the Reader made for it) and is kept, not copied.
func decodePublish(p *Publish, flags byte, body []byte, v Version, owned bool) error {
	if flags&0x06 == 0x06 {
		return malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
	}
	if flags > 0x0F {
		return malformed("PUBLISH flags past the low four bits")
	}
	if !knownVersion(v) {
		return protocolErr("PUBLISH before the protocol version is known")
	}
	*p = Publish{Dup: flags&0x08 != 0, QoS: flags >> 1 & 0x03, Retain: flags&0x01 != 0}

	// Check the layout on the caller's bytes before allocating, so a
	// truncated packet costs nothing.
	r := rd{b: body}
	topic, err := r.text("topic name")
	if err != nil {
		return err
	}
	if p.QoS > 0 {
		id, err := r.u16("packet identifier")
		if err != nil {
			return err
		}
		if id == 0 {
			return malformed("PUBLISH with QoS > 0 and packet identifier 0 [MQTT-2.2.1-3]")
		}
		p.PacketID = id
	}

	buf := body
	if !owned {
		buf = make([]byte, len(body))
		copy(buf, body)
	}
	if len(topic) > 0 {
		p.Topic = unsafe.String(&buf[2], len(topic))
	}
	r.b = buf
	if v == V5 {
		if err := decodeProps(&r, &p.Properties, uint8(PUBLISH), true); err != nil {
			return err
		}
	}
	if r.left() > 0 {
		p.Payload = buf[r.off:len(buf):len(buf)]
	}
	return nil
}
