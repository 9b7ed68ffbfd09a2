package packet

// Connect flags (3.1.1 and 5.0 section 3.1.2.3).
const (
	connReserved   = 0x01
	connCleanStart = 0x02
	connWill       = 0x04
	connWillQoS    = 0x18
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

// decodeConnect decodes a CONNECT body. The protocol level comes from the
// packet itself.
//
// A protocol name other than "MQTT" (levels 4 and 5) or "MQIsdp" (level 3),
// or any other level, is an *Error with UnsupportedProtocolVersion
// ([MQTT-3.1.2-1], [MQTT-3.1.2-2]); the *Connect returned with it carries the
// name and level that were read, so that the server can answer in the
// client's format (CONNACK 0x01 in 3.1.1, 0x84 in 5.0).
func decodeConnect(body []byte) (Packet, error) {
	r := rd{b: body}
	name, err := r.binary("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := r.u8("protocol level")
	if err != nil {
		return nil, err
	}
	c := &Connect{Version: Version(level)}
	switch {
	case (c.Version == V311 || c.Version == V5) && string(name) == "MQTT":
		c.ProtocolName = "MQTT"
	case c.Version == V31 && string(name) == "MQIsdp":
		c.ProtocolName = "MQIsdp"
	default:
		c.ProtocolName = string(name)
		return c, &Error{Code: UnsupportedProtocolVersion,
			Reason: "unsupported protocol name or level [MQTT-3.1.2-1] [MQTT-3.1.2-2]"}
	}

	flags, err := r.u8("connect flags")
	if err != nil {
		return nil, err
	}
	if err := checkConnectFlags(flags, c.Version); err != nil {
		return nil, err
	}
	c.CleanStart = flags&connCleanStart != 0
	if c.KeepAlive, err = r.u16("keep alive"); err != nil {
		return nil, err
	}
	if c.Version == V5 {
		if err := decodeProps(&r, &c.Properties, uint8(CONNECT), false); err != nil {
			return nil, err
		}
	}

	id, err := r.text("client identifier")
	if err != nil {
		return nil, err
	}
	c.ClientID = str(id, false)
	if flags&connWill != 0 {
		w := &Will{QoS: flags & connWillQoS >> 3, Retain: flags&connWillRetain != 0}
		if c.Version == V5 {
			if err := decodeProps(&r, &w.Properties, targetWill, false); err != nil {
				return nil, err
			}
		}
		topic, err := r.text("will topic")
		if err != nil {
			return nil, err
		}
		w.Topic = str(topic, false)
		payload, err := r.binary("will payload")
		if err != nil {
			return nil, err
		}
		w.Payload = bin(payload, false)
		c.Will = w
	}
	if flags&connUsername != 0 {
		u, err := r.text("user name")
		if err != nil {
			return nil, err
		}
		c.Username, c.HasUsername = str(u, false), true
	}
	if flags&connPassword != 0 {
		pw, err := r.binary("password")
		if err != nil {
			return nil, err
		}
		c.Password, c.HasPassword = bin(pw, false), true
	}
	if r.left() > 0 {
		return nil, malformed("bytes after the last field of CONNECT")
	}
	return c, nil
}

// checkConnectFlags applies the rules on the connect flags byte that make a
// CONNECT malformed.
func checkConnectFlags(flags byte, v Version) error {
	will := flags&connWill != 0
	qos := flags & connWillQoS >> 3
	switch {
	case flags&connReserved != 0:
		return malformed("CONNECT reserved flag is set [MQTT-3.1.2-3]")
	case will && qos == 3:
		// [MQTT-3.1.2-14] in 3.1.1, [MQTT-3.1.2-12] in 5.0.
		return malformed("will QoS 3 [MQTT-3.1.2-14] [MQTT-3.1.2-12]")
	case !will && qos != 0:
		// [MQTT-3.1.2-13] in 3.1.1, [MQTT-3.1.2-11] in 5.0.
		return malformed("will QoS without the will flag [MQTT-3.1.2-13] [MQTT-3.1.2-11]")
	case !will && flags&connWillRetain != 0:
		// [MQTT-3.1.2-15] in 3.1.1, [MQTT-3.1.2-13] in 5.0.
		return malformed("will retain without the will flag [MQTT-3.1.2-15] [MQTT-3.1.2-13]")
	case v < V5 && flags&connPassword != 0 && flags&connUsername == 0:
		return malformed("password flag without the user name flag [MQTT-3.1.2-22]")
	}
	return nil
}
