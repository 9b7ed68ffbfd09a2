package packet

import (
	"fmt"
	"slices"
)

// Append encodes p for protocol version v onto dst; it is p.Append(dst, v).
//
// Every Append computes the packet's size first, grows dst once if it lacks
// the capacity and then writes the fields, so encoding into a buffer with
// enough capacity allocates nothing. For 3.1 and 3.1.1 properties are not
// written and reason codes are mapped to what the version can carry (CONNACK
// return codes 0-5, SUBACK 0x80 for any failure, none at all in the other
// acknowledgements and DISCONNECT). In 5.0 the shortest legal form is used:
// PUBACK, PUBREC, PUBREL and PUBCOMP leave out a Success reason code without
// properties, and every packet leaves out empty optional properties.
// Properties not allowed in the packet type are never written.
func Append(dst []byte, p Packet, v Version) ([]byte, error) {
	return p.Append(dst, v)
}

// Size returns the number of bytes Append writes for p in version v, fixed
// header included, so that a sender can hold a packet against the peer's
// Maximum Packet Size before encoding it.
func Size(p Packet, v Version) (int, error) {
	s, ok := p.(interface {
		size(Version) (int, error)
	})
	if !ok {
		return 0, fmt.Errorf("%w: unknown packet type %T", ErrUnencodable, p)
	}
	rem, err := s.size(v)
	if err != nil {
		return 0, err
	}
	return 1 + varintLen(rem) + rem, nil
}

// grow makes room in dst for a whole packet with the given Remaining Length.
func grow(dst []byte, remaining int) []byte {
	return slices.Grow(dst, 1+varintLen(remaining)+remaining)
}

func badVersion(t Type, v Version) error {
	return fmt.Errorf("%w: %s for protocol version %d", ErrUnencodable, t, byte(v))
}

// size returns the Remaining Length of the PUBLISH.
func (p *Publish) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(PUBLISH, v)
	}
	if p.QoS > 2 {
		return 0, fmt.Errorf("%w: PUBLISH with QoS %d", ErrUnencodable, p.QoS)
	}
	if err := checkLen("topic name", len(p.Topic)); err != nil {
		return 0, err
	}
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v == V5 {
		pl, err := propsSize(&p.Properties, uint8(PUBLISH))
		if err != nil {
			return 0, err
		}
		n += varintLen(pl) + pl
	}
	return finish(n, nil)
}

// Append encodes the PUBLISH; see the package-level Append.
func (p *Publish) Append(dst []byte, v Version) ([]byte, error) {
	n, err := p.size(v)
	if err != nil {
		return dst, err
	}
	flags := p.QoS << 1
	if p.Dup {
		flags |= 0x08
	}
	if p.Retain {
		flags |= 0x01
	}
	dst = appendHeader(grow(dst, n), PUBLISH, flags, n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if v == V5 {
		pl, _ := propsSize(&p.Properties, uint8(PUBLISH))
		dst = appendProps(dst, &p.Properties, uint8(PUBLISH), pl)
	}
	return append(dst, p.Payload...), nil
}

// v3ConnackCode is the 3.1.1 return code for a CONNACK reason code: return
// codes 0-5 stay, 5.0 codes are mapped.
func v3ConnackCode(c ReasonCode) ReasonCode {
	if c <= V3NotAuthorized {
		return c
	}
	return c.V3ConnackCode()
}

func (c *Connack) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(CONNACK, v)
	}
	if v < V5 {
		return 2, nil
	}
	pl, err := propsSize(&c.Properties, uint8(CONNACK))
	return finish(2+varintLen(pl)+pl, err)
}

// Append encodes the CONNACK; see the package-level Append.
func (c *Connack) Append(dst []byte, v Version) ([]byte, error) {
	n, err := c.size(v)
	if err != nil {
		return dst, err
	}
	dst = appendHeader(grow(dst, n), CONNACK, 0, n)
	var flags byte
	if c.SessionPresent {
		flags = 0x01
	}
	if v < V5 {
		return append(dst, flags, byte(v3ConnackCode(c.ReasonCode))), nil
	}
	dst = append(dst, flags, byte(c.ReasonCode))
	pl, _ := propsSize(&c.Properties, uint8(CONNACK))
	return appendProps(dst, &c.Properties, uint8(CONNACK), pl), nil
}

// size of a PUBACK, PUBREC, PUBREL or PUBCOMP: 2 in 3.1.1 and for a 5.0
// Success without properties, 3 for a reason code without properties.
func (a *Ack) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(a.PacketType, v)
	}
	if a.PacketType < PUBACK || a.PacketType > PUBCOMP {
		return 0, fmt.Errorf("%w: Ack with packet type %s", ErrUnencodable, a.PacketType)
	}
	if v < V5 {
		return 2, nil
	}
	pl, err := propsSize(&a.Properties, uint8(a.PacketType))
	switch {
	case err != nil:
		return 0, err
	case pl > 0:
		return finish(3+varintLen(pl)+pl, nil)
	case a.ReasonCode != Success:
		return 3, nil
	}
	return 2, nil
}

// Append encodes the acknowledgement; see the package-level Append.
func (a *Ack) Append(dst []byte, v Version) ([]byte, error) {
	n, err := a.size(v)
	if err != nil {
		return dst, err
	}
	var flags byte
	if a.PacketType == PUBREL {
		flags = 0x02
	}
	dst = appendU16(appendHeader(grow(dst, n), a.PacketType, flags, n), a.PacketID)
	if n == 2 {
		return dst, nil
	}
	dst = append(dst, byte(a.ReasonCode))
	if n == 3 {
		return dst, nil
	}
	pl, _ := propsSize(&a.Properties, uint8(a.PacketType))
	return appendProps(dst, &a.Properties, uint8(a.PacketType), pl), nil
}

func (s *Subscribe) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(SUBSCRIBE, v)
	}
	n := 2
	for _, sub := range s.Subscriptions {
		if err := checkLen("topic filter", len(sub.Filter)); err != nil {
			return 0, err
		}
		n += 3 + len(sub.Filter)
	}
	if v == V5 {
		pl, err := propsSize(&s.Properties, uint8(SUBSCRIBE))
		if err != nil {
			return 0, err
		}
		n += varintLen(pl) + pl
	}
	return finish(n, nil)
}

// Append encodes the SUBSCRIBE; see the package-level Append. Before 5.0
// only the requested QoS of the options is written.
func (s *Subscribe) Append(dst []byte, v Version) ([]byte, error) {
	n, err := s.size(v)
	if err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(grow(dst, n), SUBSCRIBE, 0x02, n), s.PacketID)
	if v == V5 {
		pl, _ := propsSize(&s.Properties, uint8(SUBSCRIBE))
		dst = appendProps(dst, &s.Properties, uint8(SUBSCRIBE), pl)
	}
	for _, sub := range s.Subscriptions {
		o := sub.Options
		b := o.QoS & 0x03
		if v == V5 {
			if o.NoLocal {
				b |= 0x04
			}
			if o.RetainAsPublished {
				b |= 0x08
			}
			b |= (o.RetainHandling & 0x03) << 4
		}
		dst = append(appendString(dst, sub.Filter), b)
	}
	return dst, nil
}

// ackSize is the Remaining Length of a SUBACK or UNSUBACK with codes reason
// codes.
func ackSize(p *Properties, t Type, codes int, v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(t, v)
	}
	if v < V5 {
		if t == UNSUBACK {
			return 2, nil
		}
		return finish(2+codes, nil)
	}
	pl, err := propsSize(p, uint8(t))
	return finish(2+varintLen(pl)+pl+codes, err)
}

func (s *Suback) size(v Version) (int, error) {
	return ackSize(&s.Properties, SUBACK, len(s.ReasonCodes), v)
}

// Append encodes the SUBACK; see the package-level Append. Before 5.0 any
// failure code is written as 0x80.
func (s *Suback) Append(dst []byte, v Version) ([]byte, error) {
	n, err := s.size(v)
	if err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(grow(dst, n), SUBACK, 0, n), s.PacketID)
	if v == V5 {
		pl, _ := propsSize(&s.Properties, uint8(SUBACK))
		dst = appendProps(dst, &s.Properties, uint8(SUBACK), pl)
	}
	for _, c := range s.ReasonCodes {
		if v < V5 && c > GrantedQoS2 {
			c = UnspecifiedError
		}
		dst = append(dst, byte(c))
	}
	return dst, nil
}

func (u *Unsubscribe) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(UNSUBSCRIBE, v)
	}
	n := 2
	for _, f := range u.Filters {
		if err := checkLen("topic filter", len(f)); err != nil {
			return 0, err
		}
		n += 2 + len(f)
	}
	if v == V5 {
		pl, err := propsSize(&u.Properties, uint8(UNSUBSCRIBE))
		if err != nil {
			return 0, err
		}
		n += varintLen(pl) + pl
	}
	return finish(n, nil)
}

// Append encodes the UNSUBSCRIBE; see the package-level Append.
func (u *Unsubscribe) Append(dst []byte, v Version) ([]byte, error) {
	n, err := u.size(v)
	if err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(grow(dst, n), UNSUBSCRIBE, 0x02, n), u.PacketID)
	if v == V5 {
		pl, _ := propsSize(&u.Properties, uint8(UNSUBSCRIBE))
		dst = appendProps(dst, &u.Properties, uint8(UNSUBSCRIBE), pl)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}

func (u *Unsuback) size(v Version) (int, error) {
	return ackSize(&u.Properties, UNSUBACK, len(u.ReasonCodes), v)
}

// Append encodes the UNSUBACK; see the package-level Append. Before 5.0 it
// carries no reason codes.
func (u *Unsuback) Append(dst []byte, v Version) ([]byte, error) {
	n, err := u.size(v)
	if err != nil {
		return dst, err
	}
	dst = appendU16(appendHeader(grow(dst, n), UNSUBACK, 0, n), u.PacketID)
	if v < V5 {
		return dst, nil
	}
	pl, _ := propsSize(&u.Properties, uint8(UNSUBACK))
	dst = appendProps(dst, &u.Properties, uint8(UNSUBACK), pl)
	for _, c := range u.ReasonCodes {
		dst = append(dst, byte(c))
	}
	return dst, nil
}

func (*Pingreq) size(v Version) (int, error)  { return 0, nil }
func (*Pingresp) size(v Version) (int, error) { return 0, nil }

// Append encodes the PINGREQ.
func (*Pingreq) Append(dst []byte, v Version) ([]byte, error) {
	return append(dst, byte(PINGREQ)<<4, 0), nil
}

// Append encodes the PINGRESP.
func (*Pingresp) Append(dst []byte, v Version) ([]byte, error) {
	return append(dst, byte(PINGRESP)<<4, 0), nil
}

// reasonSize is the Remaining Length of a 5.0 DISCONNECT or AUTH: 0 for
// Success without properties, 1 for a reason code alone (DISCONNECT only),
// else reason code and properties.
func reasonSize(c ReasonCode, p *Properties, t Type) (int, error) {
	pl, err := propsSize(p, uint8(t))
	switch {
	case err != nil:
		return 0, err
	case pl == 0 && c == Success:
		return 0, nil
	case pl == 0 && t == DISCONNECT:
		return 1, nil
	}
	return finish(1+varintLen(pl)+pl, nil)
}

func appendReason(dst []byte, c ReasonCode, p *Properties, t Type, n int) []byte {
	dst = appendHeader(grow(dst, n), t, 0, n)
	if n == 0 {
		return dst
	}
	dst = append(dst, byte(c))
	if n == 1 {
		return dst
	}
	pl, _ := propsSize(p, uint8(t))
	return appendProps(dst, p, uint8(t), pl)
}

func (d *Disconnect) size(v Version) (int, error) {
	if !knownVersion(v) {
		return 0, badVersion(DISCONNECT, v)
	}
	if v < V5 {
		return 0, nil
	}
	return reasonSize(d.ReasonCode, &d.Properties, DISCONNECT)
}

// Append encodes the DISCONNECT; see the package-level Append.
func (d *Disconnect) Append(dst []byte, v Version) ([]byte, error) {
	n, err := d.size(v)
	if err != nil {
		return dst, err
	}
	return appendReason(dst, d.ReasonCode, &d.Properties, DISCONNECT, n), nil
}

func (a *Auth) size(v Version) (int, error) {
	if v != V5 {
		return 0, badVersion(AUTH, v)
	}
	return reasonSize(a.ReasonCode, &a.Properties, AUTH)
}

// Append encodes the AUTH, which exists in 5.0 only.
func (a *Auth) Append(dst []byte, v Version) ([]byte, error) {
	n, err := a.size(v)
	if err != nil {
		return dst, err
	}
	return appendReason(dst, a.ReasonCode, &a.Properties, AUTH, n), nil
}
