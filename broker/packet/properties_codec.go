package packet

import "fmt"

// targetWill is the pseudo packet type of the will properties of a CONNECT
// in the table of which properties may appear where.
const targetWill = 16

// Bits of the packet types (and the will pseudo type) a property may appear
// in.
const (
	inConnect     = 1 << CONNECT
	inConnack     = 1 << CONNACK
	inPublish     = 1 << PUBLISH
	inPuback      = 1 << PUBACK
	inPubrec      = 1 << PUBREC
	inPubrel      = 1 << PUBREL
	inPubcomp     = 1 << PUBCOMP
	inSubscribe   = 1 << SUBSCRIBE
	inSuback      = 1 << SUBACK
	inUnsubscribe = 1 << UNSUBSCRIBE
	inUnsuback    = 1 << UNSUBACK
	inDisconnect  = 1 << DISCONNECT
	inAuth        = 1 << AUTH
	inWill        = 1 << targetWill

	inAcks = inPuback | inPubrec | inPubrel | inPubcomp
)

// propAllowed is the table of MQTT 5.0 section 2.2.2.2: the packet types (and
// will properties) property id may appear in; 0 for an unknown id. A property
// outside its packet types, like an unknown one, makes the packet malformed.
func propAllowed(id PropID) uint32 {
	switch id {
	case PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic, PropCorrelationData:
		return inPublish | inWill
	case PropSubscriptionID:
		return inPublish | inSubscribe
	case PropSessionExpiry:
		return inConnect | inConnack | inDisconnect
	case PropAssignedClientID, PropServerKeepAlive, PropResponseInfo, PropMaximumQoS, PropRetainAvailable,
		PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable:
		return inConnack
	case PropAuthMethod, PropAuthData:
		return inConnect | inConnack | inAuth
	case PropRequestProblemInfo, PropRequestResponseInfo:
		return inConnect
	case PropWillDelay:
		return inWill
	case PropServerReference:
		return inConnack | inDisconnect
	case PropReasonString:
		return inConnack | inAcks | inSuback | inUnsuback | inDisconnect | inAuth
	case PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumPacketSize:
		return inConnect | inConnack
	case PropTopicAlias:
		return inPublish
	case PropUserProperty:
		return inConnect | inConnack | inPublish | inWill | inAcks | inSubscribe | inSuback |
			inUnsubscribe | inUnsuback | inDisconnect | inAuth
	}
	return 0
}

// propKind is the data type of a property value.
type propKind byte

const (
	kindUnknown propKind = iota
	kindByte
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair
)

func kindOf(id PropID) propKind {
	switch id {
	case PropPayloadFormat, PropRequestProblemInfo, PropRequestResponseInfo, PropMaximumQoS,
		PropRetainAvailable, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable:
		return kindByte
	case PropServerKeepAlive, PropReceiveMaximum, PropTopicAliasMaximum, PropTopicAlias:
		return kindU16
	case PropMessageExpiry, PropSessionExpiry, PropWillDelay, PropMaximumPacketSize:
		return kindU32
	case PropSubscriptionID:
		return kindVarint
	case PropContentType, PropResponseTopic, PropAssignedClientID, PropAuthMethod, PropResponseInfo,
		PropServerReference, PropReasonString:
		return kindString
	case PropCorrelationData, PropAuthData:
		return kindBinary
	case PropUserProperty:
		return kindPair
	}
	return kindUnknown
}

// targetName names a property target in error messages.
func targetName(t uint8) string {
	if t == targetWill {
		return "will properties"
	}
	return Type(t).String()
}

// decodeProps reads a property block (Property Length, then the properties)
// for target t into p, which the caller has zeroed.
//
// The first pass checks everything: the length fits the packet, every id is
// known and allowed for t (else malformed, 5.0 section 2.2.2.2), every value
// is complete and strings are valid UTF-8, and no property appears twice
// unless it is User Property, or Subscription Identifier in a PUBLISH (else a
// protocol error). It also counts the repeated properties, so the second
// pass, which stores the values, makes their slices at their final size.
// With own set, strings and binary values are views of r's buffer, which the
// caller owns; otherwise they are copies.
func decodeProps(r *rd, p *Properties, t uint8, own bool) error {
	n, err := r.varint("property length")
	if err != nil {
		return err
	}
	if n > r.left() {
		return malformed("property length past the end of the packet")
	}
	blk := rd{b: r.b[r.off : r.off+n]}
	r.off += n
	if n == 0 {
		return nil
	}
	var seen uint64
	nUser, nSub := 0, 0
	q := blk
	for q.left() > 0 {
		c, _ := q.u8("property identifier")
		id := PropID(c)
		allowed := propAllowed(id)
		if allowed == 0 {
			return malformed(fmt.Sprintf("unknown property identifier 0x%02X", c))
		}
		if allowed&(1<<t) == 0 {
			return malformed(fmt.Sprintf("property 0x%02X is not allowed in %s", c, targetName(t)))
		}
		switch {
		case id == PropUserProperty:
			nUser++
		case id == PropSubscriptionID && t == uint8(PUBLISH):
			nSub++
		default:
			if seen&(1<<id) != 0 {
				return protocolErr(fmt.Sprintf("property 0x%02X included more than once in %s", c, targetName(t)))
			}
			seen |= 1 << id
			if id == PropSubscriptionID {
				nSub++
			}
		}
		if err := skipValue(&q, id); err != nil {
			return err
		}
	}
	if nUser > 0 {
		p.UserProperties = make([]UserProperty, 0, nUser)
	}
	if nSub > 0 {
		p.SubscriptionIDs = make([]uint32, 0, nSub)
	}
	q = blk
	for q.left() > 0 {
		c, _ := q.u8("")
		storeValue(&q, p, PropID(c), own)
	}
	return nil
}

// skipValue checks and steps over the value of property id.
func skipValue(q *rd, id PropID) error {
	var err error
	switch kindOf(id) {
	case kindByte:
		_, err = q.u8("property value")
	case kindU16:
		_, err = q.u16("property value")
	case kindU32:
		_, err = q.u32("property value")
	case kindVarint:
		_, err = q.varint("subscription identifier")
	case kindString:
		_, err = q.text("property string")
	case kindBinary:
		_, err = q.binary("property binary data")
	case kindPair:
		if _, err = q.text("user property name"); err == nil {
			_, err = q.text("user property value")
		}
	}
	return err
}

// storeValue reads the value of property id, already checked by skipValue,
// into p.
func storeValue(q *rd, p *Properties, id PropID, own bool) {
	switch id {
	case PropUserProperty:
		k, _ := q.binary("")
		v, _ := q.binary("")
		p.UserProperties = append(p.UserProperties, UserProperty{Key: str(k, own), Value: str(v, own)})
		return
	case PropSubscriptionID:
		v, _ := q.varint("")
		p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
		return
	}
	p.Set(id)
	switch kindOf(id) {
	case kindByte:
		v, _ := q.u8("")
		*byteField(p, id) = v
	case kindU16:
		v, _ := q.u16("")
		*u16Field(p, id) = v
	case kindU32:
		v, _ := q.u32("")
		*u32Field(p, id) = v
	case kindString:
		v, _ := q.binary("")
		*stringField(p, id) = str(v, own)
	case kindBinary:
		v, _ := q.binary("")
		*binaryField(p, id) = bin(v, own)
	}
}

func byteField(p *Properties, id PropID) *byte {
	switch id {
	case PropPayloadFormat:
		return &p.PayloadFormat
	case PropRequestProblemInfo:
		return &p.RequestProblemInfo
	case PropRequestResponseInfo:
		return &p.RequestResponseInfo
	case PropMaximumQoS:
		return &p.MaximumQoS
	case PropRetainAvailable:
		return &p.RetainAvailable
	case PropWildcardSubAvailable:
		return &p.WildcardSubAvailable
	case PropSubIDAvailable:
		return &p.SubIDAvailable
	}
	return &p.SharedSubAvailable
}

func u16Field(p *Properties, id PropID) *uint16 {
	switch id {
	case PropServerKeepAlive:
		return &p.ServerKeepAlive
	case PropReceiveMaximum:
		return &p.ReceiveMaximum
	case PropTopicAliasMaximum:
		return &p.TopicAliasMaximum
	}
	return &p.TopicAlias
}

func u32Field(p *Properties, id PropID) *uint32 {
	switch id {
	case PropMessageExpiry:
		return &p.MessageExpiry
	case PropSessionExpiry:
		return &p.SessionExpiry
	case PropWillDelay:
		return &p.WillDelay
	}
	return &p.MaximumPacketSize
}

func stringField(p *Properties, id PropID) *string {
	switch id {
	case PropContentType:
		return &p.ContentType
	case PropResponseTopic:
		return &p.ResponseTopic
	case PropAssignedClientID:
		return &p.AssignedClientID
	case PropAuthMethod:
		return &p.AuthMethod
	case PropResponseInfo:
		return &p.ResponseInfo
	case PropServerReference:
		return &p.ServerReference
	}
	return &p.ReasonString
}

func binaryField(p *Properties, id PropID) *[]byte {
	if id == PropCorrelationData {
		return &p.CorrelationData
	}
	return &p.AuthData
}

// propsSize is the length of the encoded properties of p allowed for target
// t, without the Property Length in front. Properties not allowed for t are
// left out, so an encoder never writes what the receiver must refuse.
func propsSize(p *Properties, t uint8) (int, error) {
	if p.IsZero() {
		return 0, nil
	}
	n := 0
	for id := PropID(1); id <= maxPropID; id++ {
		if propAllowed(id)&(1<<t) == 0 || !p.Has(id) {
			continue
		}
		switch kindOf(id) {
		case kindByte:
			n += 2
		case kindU16:
			n += 3
		case kindU32:
			n += 5
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				if v > MaxRemainingLength {
					return 0, fmt.Errorf("%w: subscription identifier %d", ErrUnencodable, v)
				}
				n += 1 + varintLen(int(v))
			}
		case kindString:
			s := *stringField(p, id)
			if err := checkLen("property string", len(s)); err != nil {
				return 0, err
			}
			n += 3 + len(s)
		case kindBinary:
			b := *binaryField(p, id)
			if err := checkLen("property binary data", len(b)); err != nil {
				return 0, err
			}
			n += 3 + len(b)
		case kindPair:
			for _, u := range p.UserProperties {
				if err := checkLen("user property", max(len(u.Key), len(u.Value))); err != nil {
					return 0, err
				}
				n += 5 + len(u.Key) + len(u.Value)
			}
		}
	}
	return n, nil
}

// appendProps appends Property Length n (from propsSize) and the properties
// of p allowed for t, in ascending id order; repeated properties keep their
// order.
func appendProps(dst []byte, p *Properties, t uint8, n int) []byte {
	dst = appendVarint(dst, n)
	if n == 0 {
		return dst
	}
	for id := PropID(1); id <= maxPropID; id++ {
		if propAllowed(id)&(1<<t) == 0 || !p.Has(id) {
			continue
		}
		switch kindOf(id) {
		case kindByte:
			dst = append(dst, byte(id), *byteField(p, id))
		case kindU16:
			dst = appendU16(append(dst, byte(id)), *u16Field(p, id))
		case kindU32:
			dst = appendU32(append(dst, byte(id)), *u32Field(p, id))
		case kindVarint:
			for _, v := range p.SubscriptionIDs {
				dst = appendVarint(append(dst, byte(id)), int(v))
			}
		case kindString:
			dst = appendString(append(dst, byte(id)), *stringField(p, id))
		case kindBinary:
			dst = appendBinary(append(dst, byte(id)), *binaryField(p, id))
		case kindPair:
			for _, u := range p.UserProperties {
				dst = appendString(append(dst, byte(id)), u.Key)
				dst = appendString(dst, u.Value)
			}
		}
	}
	return dst
}
