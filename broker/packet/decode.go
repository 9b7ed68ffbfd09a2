package packet

// Decode decodes one packet body: exactly fh.Remaining bytes that followed
// the fixed header fh. It never keeps body: everything the packet retains is
// copied. For CONNECT the protocol version is read from the packet and v is
// ignored; every other packet needs v (V31, V311 or V5), else it is a
// protocol error (no CONNECT yet).
//
// Errors are *Error values. Decode decides what is wrong with the bytes:
// fixed-header flags, lengths past the end of the packet or bytes after its
// last field, invalid UTF-8 strings, unknown properties or properties not
// allowed for the packet type (malformed, 0x81); a property repeated that may
// appear once, and SUBSCRIBE or UNSUBSCRIBE without a topic filter (protocol
// error, 0x82); an unsupported protocol name or level in CONNECT (0x84). What
// the packet means — topic names, aliases, client identifiers, property
// values, who may send which reason code — is for Validate.
func Decode(fh FixedHeader, body []byte, v Version) (Packet, error) {
	if len(body) != fh.Remaining {
		return nil, malformed("body length differs from the remaining length")
	}
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return nil, err
	}
	if fh.Type == CONNECT {
		return decodeConnect(body)
	}
	if !knownVersion(v) {
		return nil, protocolErr(fh.Type.String() + " before CONNECT [MQTT-3.1.0-1]")
	}
	switch fh.Type {
	case PUBLISH:
		p := new(Publish)
		if err := DecodePublish(p, fh.Flags, body, v); err != nil {
			return nil, err
		}
		return p, nil
	case CONNACK:
		return decodeConnack(body, v)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return decodeAck(fh.Type, body, v)
	case SUBSCRIBE:
		return decodeSubscribe(body, v)
	case SUBACK:
		return decodeSuback(body, v)
	case UNSUBSCRIBE:
		return decodeUnsubscribe(body, v)
	case UNSUBACK:
		return decodeUnsuback(body, v)
	case PINGREQ, PINGRESP:
		if len(body) != 0 {
			return nil, malformed(fh.Type.String() + " with a non-zero remaining length")
		}
		if fh.Type == PINGREQ {
			return &Pingreq{}, nil
		}
		return &Pingresp{}, nil
	case DISCONNECT:
		return decodeDisconnect(body, v)
	case AUTH:
		return decodeAuth(body, v)
	}
	return nil, malformed("unknown packet type")
}

func decodeConnack(body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	flags, err := r.u8("connect acknowledge flags")
	if err != nil {
		return nil, err
	}
	if flags&^0x01 != 0 {
		return nil, malformed("CONNACK reserved flags are set [MQTT-3.2.2-1]")
	}
	code, err := r.u8("connect reason code")
	if err != nil {
		return nil, err
	}
	c := &Connack{SessionPresent: flags&0x01 != 0, ReasonCode: ReasonCode(code)}
	if v < V5 {
		if code > byte(V3NotAuthorized) {
			return nil, malformed("CONNACK return code past 5")
		}
	} else if err := decodeProps(&r, &c.Properties, uint8(CONNACK), false); err != nil {
		return nil, err
	}
	if r.left() > 0 {
		return nil, malformed("bytes after the last field of CONNACK")
	}
	return c, nil
}

// decodeAck decodes PUBACK, PUBREC, PUBREL and PUBCOMP. In 5.0 the reason
// code and properties may be left out: Remaining Length 2 means Success, 3
// means no properties (section 3.4.2.1).
func decodeAck(t Type, body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	id, err := r.u16("packet identifier")
	if err != nil {
		return nil, err
	}
	a := &Ack{PacketType: t, PacketID: id}
	if v < V5 || r.left() == 0 {
		if r.left() > 0 {
			return nil, malformed("bytes after the packet identifier of " + t.String())
		}
		return a, nil
	}
	code, _ := r.u8("reason code")
	a.ReasonCode = ReasonCode(code)
	if r.left() > 0 {
		if err := decodeProps(&r, &a.Properties, uint8(t), false); err != nil {
			return nil, err
		}
	}
	if r.left() > 0 {
		return nil, malformed("bytes after the properties of " + t.String())
	}
	return a, nil
}

// packetID reads the packet identifier of a SUBSCRIBE or UNSUBSCRIBE, which
// must not be 0 ([MQTT-2.3.1-1] in 3.1.1, [MQTT-2.2.1-3] in 5.0).
func packetID(r *rd, t Type) (uint16, error) {
	id, err := r.u16("packet identifier")
	if err != nil {
		return 0, err
	}
	if id == 0 {
		return 0, malformed(t.String() + " with packet identifier 0 [MQTT-2.2.1-3]")
	}
	return id, nil
}

// decodeSubscribe decodes a SUBSCRIBE. The reserved bits of each options
// byte must be 0: bits 6-7 in 5.0 [MQTT-3.8.3-5], bits 2-7 in 3.1.1, where a
// requested QoS of 3 is malformed as well [MQTT-3-8.3-4]. In 5.0 a QoS or
// Retain Handling of 3 is a protocol error, left to Validate. A SUBSCRIBE
// without any filter is a protocol error ([MQTT-3.8.3-3] in 3.1.1,
// [MQTT-3.8.3-2] in 5.0).
func decodeSubscribe(body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	id, err := packetID(&r, SUBSCRIBE)
	if err != nil {
		return nil, err
	}
	s := &Subscribe{PacketID: id}
	if v == V5 {
		if err := decodeProps(&r, &s.Properties, uint8(SUBSCRIBE), false); err != nil {
			return nil, err
		}
	}
	for r.left() > 0 {
		f, err := r.text("topic filter")
		if err != nil {
			return nil, err
		}
		o, err := r.u8("subscription options")
		if err != nil {
			return nil, err
		}
		if v == V5 {
			if o&0xC0 != 0 {
				return nil, malformed("subscription options reserved bits are set [MQTT-3.8.3-5]")
			}
		} else if o&0xFC != 0 || o&0x03 == 0x03 {
			return nil, malformed("requested QoS byte not 0, 1 or 2 [MQTT-3-8.3-4]")
		}
		s.Subscriptions = append(s.Subscriptions, Subscription{Filter: str(f, false), Options: SubOptions{
			QoS:               o & 0x03,
			NoLocal:           o&0x04 != 0,
			RetainAsPublished: o&0x08 != 0,
			RetainHandling:    o >> 4 & 0x03,
		}})
	}
	if len(s.Subscriptions) == 0 {
		return nil, protocolErr("SUBSCRIBE without a topic filter [MQTT-3.8.3-3] [MQTT-3.8.3-2]")
	}
	return s, nil
}

// decodeSuback decodes a SUBACK; 3.1.1 return codes are 0, 1, 2 and 0x80
// only [MQTT-3.9.3-2].
func decodeSuback(body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	id, err := r.u16("packet identifier")
	if err != nil {
		return nil, err
	}
	s := &Suback{PacketID: id}
	if v == V5 {
		if err := decodeProps(&r, &s.Properties, uint8(SUBACK), false); err != nil {
			return nil, err
		}
	}
	s.ReasonCodes = reasonCodes(r.b[r.off:])
	if v < V5 {
		for _, c := range s.ReasonCodes {
			if c > GrantedQoS2 && c != UnspecifiedError {
				return nil, malformed("SUBACK return code not 0, 1, 2 or 0x80 [MQTT-3.9.3-2]")
			}
		}
	}
	return s, nil
}

// decodeUnsubscribe decodes an UNSUBSCRIBE, which must carry at least one
// topic filter [MQTT-3.10.3-2].
func decodeUnsubscribe(body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	id, err := packetID(&r, UNSUBSCRIBE)
	if err != nil {
		return nil, err
	}
	u := &Unsubscribe{PacketID: id}
	if v == V5 {
		if err := decodeProps(&r, &u.Properties, uint8(UNSUBSCRIBE), false); err != nil {
			return nil, err
		}
	}
	for r.left() > 0 {
		f, err := r.text("topic filter")
		if err != nil {
			return nil, err
		}
		u.Filters = append(u.Filters, str(f, false))
	}
	if len(u.Filters) == 0 {
		return nil, protocolErr("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
	}
	return u, nil
}

func decodeUnsuback(body []byte, v Version) (Packet, error) {
	r := rd{b: body}
	id, err := r.u16("packet identifier")
	if err != nil {
		return nil, err
	}
	u := &Unsuback{PacketID: id}
	if v < V5 {
		if r.left() > 0 {
			return nil, malformed("bytes after the packet identifier of UNSUBACK")
		}
		return u, nil
	}
	if err := decodeProps(&r, &u.Properties, uint8(UNSUBACK), false); err != nil {
		return nil, err
	}
	u.ReasonCodes = reasonCodes(r.b[r.off:])
	return u, nil
}

// decodeDisconnect decodes a DISCONNECT: empty before 5.0; in 5.0 Remaining
// Length 0 means Normal disconnection and 1 means no properties (section
// 3.14.2.1).
func decodeDisconnect(body []byte, v Version) (Packet, error) {
	d := &Disconnect{}
	if v < V5 {
		if len(body) != 0 {
			return nil, malformed("DISCONNECT with a non-zero remaining length")
		}
		return d, nil
	}
	code, err := reasonAndProps(body, DISCONNECT, &d.Properties)
	if err != nil {
		return nil, err
	}
	d.ReasonCode = code
	return d, nil
}

// decodeAuth decodes a 5.0 AUTH; Remaining Length 0 means Success (section
// 3.15.2.1). Before 5.0 type 15 is reserved.
func decodeAuth(body []byte, v Version) (Packet, error) {
	if v < V5 {
		return nil, malformed("reserved packet type 15 before MQTT 5.0")
	}
	a := &Auth{}
	code, err := reasonAndProps(body, AUTH, &a.Properties)
	if err != nil {
		return nil, err
	}
	a.ReasonCode = code
	return a, nil
}

// reasonAndProps reads the optional reason code and properties of a 5.0
// DISCONNECT or AUTH.
func reasonAndProps(body []byte, t Type, p *Properties) (ReasonCode, error) {
	if len(body) == 0 {
		return Success, nil
	}
	r := rd{b: body, off: 1}
	if len(body) > 1 {
		if err := decodeProps(&r, p, uint8(t), false); err != nil {
			return 0, err
		}
		if r.left() > 0 {
			return 0, malformed("bytes after the properties of " + t.String())
		}
	}
	return ReasonCode(body[0]), nil
}

func reasonCodes(b []byte) []ReasonCode {
	if len(b) == 0 {
		return nil
	}
	codes := make([]ReasonCode, len(b))
	for i, c := range b {
		codes[i] = ReasonCode(c)
	}
	return codes
}
