package packet

import "fmt"

// connectVersion is the protocol level a CONNECT is encoded with: v, or the
// packet's own Version when v is 0.
func (c *Connect) connectVersion(v Version) Version {
	if v == 0 {
		return c.Version
	}
	return v
}

// protocolName is the name written: ProtocolName, or the one the level
// calls for ("MQIsdp" for 3.1, "MQTT" after).
func (c *Connect) protocolName(v Version) string {
	switch {
	case c.ProtocolName != "":
		return c.ProtocolName
	case v == V31:
		return "MQIsdp"
	}
	return "MQTT"
}

func (c *Connect) hasUsername() bool { return c.HasUsername || c.Username != "" }
func (c *Connect) hasPassword() bool { return c.HasPassword || len(c.Password) > 0 }

func (c *Connect) size(v Version) (int, error) {
	v = c.connectVersion(v)
	if !knownVersion(v) {
		return 0, badVersion(CONNECT, v)
	}
	name := c.protocolName(v)
	n := 2 + len(name) + 4 + 2 + len(c.ClientID)
	if err := checkLen("protocol name", len(name)); err != nil {
		return 0, err
	}
	if err := checkLen("client identifier", len(c.ClientID)); err != nil {
		return 0, err
	}
	if v == V5 {
		pl, err := propsSize(&c.Properties, uint8(CONNECT))
		if err != nil {
			return 0, err
		}
		n += varintLen(pl) + pl
	}
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			return 0, fmt.Errorf("%w: will QoS %d", ErrUnencodable, w.QoS)
		}
		if err := checkLen("will topic", len(w.Topic)); err != nil {
			return 0, err
		}
		if err := checkLen("will payload", len(w.Payload)); err != nil {
			return 0, err
		}
		n += 4 + len(w.Topic) + len(w.Payload)
		if v == V5 {
			pl, err := propsSize(&w.Properties, targetWill)
			if err != nil {
				return 0, err
			}
			n += varintLen(pl) + pl
		}
	}
	if c.hasUsername() {
		if err := checkLen("user name", len(c.Username)); err != nil {
			return 0, err
		}
		n += 2 + len(c.Username)
	}
	if c.hasPassword() {
		if err := checkLen("password", len(c.Password)); err != nil {
			return 0, err
		}
		n += 2 + len(c.Password)
	}
	return finish(n, nil)
}

// Append encodes the CONNECT with protocol level v (the packet's own Version
// when v is 0) and ProtocolName, or the name the level calls for when it is
// empty. A user name or password is written when its Has flag is set or it
// is not empty.
func (c *Connect) Append(dst []byte, v Version) ([]byte, error) {
	n, err := c.size(v)
	if err != nil {
		return dst, err
	}
	v = c.connectVersion(v)
	var flags byte
	if c.CleanStart {
		flags |= connCleanStart
	}
	if w := c.Will; w != nil {
		flags |= connWill | w.QoS<<3
		if w.Retain {
			flags |= connWillRetain
		}
	}
	if c.hasUsername() {
		flags |= connUsername
	}
	if c.hasPassword() {
		flags |= connPassword
	}
	dst = appendHeader(grow(dst, n), CONNECT, 0, n)
	dst = appendString(dst, c.protocolName(v))
	dst = append(dst, byte(v), flags)
	dst = appendU16(dst, c.KeepAlive)
	if v == V5 {
		pl, _ := propsSize(&c.Properties, uint8(CONNECT))
		dst = appendProps(dst, &c.Properties, uint8(CONNECT), pl)
	}
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		if v == V5 {
			pl, _ := propsSize(&w.Properties, targetWill)
			dst = appendProps(dst, &w.Properties, targetWill, pl)
		}
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if c.hasUsername() {
		dst = appendString(dst, c.Username)
	}
	if c.hasPassword() {
		dst = appendBinary(dst, c.Password)
	}
	return dst, nil
}
