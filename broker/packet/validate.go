package packet

import (
	"unicode/utf8"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// Limits are the server's settings that decide whether a decoded packet is
// acceptable. A zero field takes its default, except TopicAliasMaximum, where
// 0 means that the server allows no topic aliases.
type Limits struct {
	MaxPacketSize     int    // bytes, whole packet; 0 = protocol maximum
	TopicAliasMaximum uint16 // the server's announced Topic Alias Maximum; 0 = aliases not allowed
	MaxTopicLevels    int    // levels of a topic name or filter; 0 = 128
	MaxClientIDLen    int    // bytes of a 3.1 / 3.1.1 client identifier; 0 = 23, what 3.1.1 guarantees
	MaxClientIDLenV5  int    // bytes of a 5.0 client identifier; 0 = 256
	ReceiveMaximum    uint16 // informational here: the broker enforces it per session
}

// Defaults of Limits (see BAD-INPUT.md).
const (
	DefaultMaxPacketSize     = 1 << 20
	DefaultTopicAliasMaximum = 10
	DefaultMaxTopicLevels    = 128
	DefaultMaxClientIDLen    = 23
	DefaultMaxClientIDLenV5  = 256
	DefaultReceiveMaximum    = 32
)

// DefaultLimits returns the defaults: 1 MiB packets, 10 topic aliases, 128
// topic levels, 23-byte client identifiers in 3.1/3.1.1 and 256-byte ones in
// 5.0, Receive Maximum 32.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketSize:     DefaultMaxPacketSize,
		TopicAliasMaximum: DefaultTopicAliasMaximum,
		MaxTopicLevels:    DefaultMaxTopicLevels,
		MaxClientIDLen:    DefaultMaxClientIDLen,
		MaxClientIDLenV5:  DefaultMaxClientIDLenV5,
		ReceiveMaximum:    DefaultReceiveMaximum,
	}
}

func (l *Limits) levels() int { return orDefault(l.MaxTopicLevels, DefaultMaxTopicLevels) }

func (l *Limits) clientIDLen(v Version) int {
	if v == V5 {
		return orDefault(l.MaxClientIDLenV5, DefaultMaxClientIDLenV5)
	}
	return orDefault(l.MaxClientIDLen, DefaultMaxClientIDLen)
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// Validate checks a decoded packet that a server received from a client
// against the normative statements about its meaning, and returns an *Error
// with the reason code the server must answer with, or nil when the packet is
// acceptable. v is the connection's protocol version (a CONNECT is checked
// against its own). Packets only a server sends (CONNACK, SUBACK, UNSUBACK,
// PINGRESP) are a protocol error.
//
// What is wrong with the bytes is Decode's to find; Validate decides the
// rest: topic names and filters, topic aliases, client identifiers, property
// values, reason codes a client may not send. Checks that need session state
// (a second CONNECT, unknown packet identifiers, Receive Maximum, whether
// enhanced authentication was negotiated) are the broker's.
func Validate(p Packet, v Version, lim Limits) error {
	switch p := p.(type) {
	case *Connect:
		return validateConnect(p, lim)
	case *Publish:
		return validatePublish(p, v, lim)
	case *Ack:
		return validateAck(p, v)
	case *Subscribe:
		return validateSubscribe(p, v, lim)
	case *Unsubscribe:
		if len(p.Filters) == 0 {
			return protocolErr("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
		}
		if p.PacketID == 0 {
			return malformed("UNSUBSCRIBE with packet identifier 0 [MQTT-2.2.1-3]")
		}
		return nil
	case *Pingreq:
		return nil
	case *Disconnect:
		return validateDisconnect(p, v)
	case *Auth:
		return validateAuth(p, v)
	case nil:
		return protocolErr("no packet")
	}
	return protocolErr("a client may not send " + p.Type().String())
}

func validateConnect(c *Connect, lim Limits) error {
	v := c.Version
	switch {
	case v == V31 && c.ProtocolName == "MQIsdp":
	case (v == V311 || v == V5) && c.ProtocolName == "MQTT":
	default:
		return &Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol name or level [MQTT-3.1.2-2]"}
	}
	if v < V5 && c.HasPassword && !c.HasUsername {
		return malformed("password without user name [MQTT-3.1.2-22]")
	}
	switch {
	case c.ClientID == "" && v == V31:
		return &Error{Code: ClientIdentifierNotValid, Reason: "empty client identifier in MQTT 3.1"}
	case c.ClientID == "" && v == V311 && !c.CleanStart:
		return &Error{Code: ClientIdentifierNotValid,
			Reason: "empty client identifier with clean session 0 [MQTT-3.1.3-8]"}
	case len(c.ClientID) > lim.clientIDLen(v):
		return &Error{Code: ClientIdentifierNotValid, Reason: "client identifier longer than the server allows"}
	}
	if v == V5 {
		p := &c.Properties
		switch {
		case p.Has(PropReceiveMaximum) && p.ReceiveMaximum == 0:
			return protocolErr("Receive Maximum of 0 (section 3.1.2.11.3)")
		case p.Has(PropMaximumPacketSize) && p.MaximumPacketSize == 0:
			return protocolErr("Maximum Packet Size of 0 (section 3.1.2.11.4)")
		case p.Has(PropRequestProblemInfo) && p.RequestProblemInfo > 1:
			return protocolErr("Request Problem Information not 0 or 1 (section 3.1.2.11.7)")
		case p.Has(PropRequestResponseInfo) && p.RequestResponseInfo > 1:
			return protocolErr("Request Response Information not 0 or 1 (section 3.1.2.11.6)")
		case p.Has(PropAuthData) && !p.Has(PropAuthMethod):
			return protocolErr("Authentication Data without Authentication Method (section 3.1.2.11.10)")
		}
	}
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			return malformed("will QoS 3 [MQTT-3.1.2-12]")
		}
		if err := topic.ValidateName(w.Topic, lim.levels()); err != nil {
			return &Error{Code: TopicNameInvalid, Reason: "will topic: " + err.Error()}
		}
		if v == V5 {
			if err := validateMessageProps(&w.Properties, w.Payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateMessageProps checks the application message properties of a
// PUBLISH or will: Payload Format Indicator 0 or 1, and when it is 1 a UTF-8
// payload (a server MAY check this, 0x99); a Response Topic that is a valid
// topic name without wildcards ([MQTT-3.3.2-13], [MQTT-3.3.2-14]).
func validateMessageProps(p *Properties, payload []byte) error {
	if p.Has(PropPayloadFormat) {
		switch p.PayloadFormat {
		case 0:
		case 1:
			if !utf8.Valid(payload) {
				return &Error{Code: PayloadFormatInvalid, Reason: "payload is not UTF-8 but its format indicator says so"}
			}
		default:
			return protocolErr("Payload Format Indicator not 0 or 1")
		}
	}
	if p.Has(PropResponseTopic) {
		if err := topic.ValidateName(p.ResponseTopic, 0); err != nil {
			return protocolErr("Response Topic: " + err.Error() + " [MQTT-3.3.2-14]")
		}
	}
	return nil
}

func validatePublish(p *Publish, v Version, lim Limits) error {
	switch {
	case p.QoS > 2:
		return malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
	case p.Dup && p.QoS == 0:
		return malformed("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
	case p.QoS > 0 && p.PacketID == 0:
		return malformed("PUBLISH with QoS > 0 and packet identifier 0 [MQTT-2.2.1-3]")
	}
	alias := v == V5 && p.Properties.Has(PropTopicAlias)
	if alias && (p.Properties.TopicAlias == 0 || p.Properties.TopicAlias > lim.TopicAliasMaximum) {
		return &Error{Code: TopicAliasInvalid,
			Reason: "Topic Alias 0 or above the Topic Alias Maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9]"}
	}
	if p.Topic == "" {
		if !alias {
			return protocolErr("zero-length topic name without a Topic Alias (section 3.3.2.1)")
		}
	} else if err := topic.ValidateName(p.Topic, lim.levels()); err != nil {
		return &Error{Code: TopicNameInvalid, Reason: err.Error() + " [MQTT-3.3.2-2]"}
	}
	if v == V5 {
		if len(p.Properties.SubscriptionIDs) > 0 {
			return protocolErr("PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]")
		}
		return validateMessageProps(&p.Properties, p.Payload)
	}
	return nil
}

// validateAck checks the reason code of a 5.0 PUBACK, PUBREC, PUBREL or
// PUBCOMP against its table ([MQTT-3.4.2-1], [MQTT-3.5.2-1],
// [MQTT-3.6.2-1], [MQTT-3.7.2-1]).
func validateAck(a *Ack, v Version) error {
	if a.PacketType < PUBACK || a.PacketType > PUBCOMP {
		return protocolErr("acknowledgement with packet type " + a.PacketType.String())
	}
	if v < V5 {
		return nil
	}
	ok := false
	switch a.PacketType {
	case PUBACK, PUBREC:
		switch a.ReasonCode {
		case Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
			TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid:
			ok = true
		}
	default:
		ok = a.ReasonCode == Success || a.ReasonCode == PacketIdentifierNotFound
	}
	if !ok {
		return protocolErr(a.ReasonCode.String() + " is not a " + a.PacketType.String() + " reason code")
	}
	return nil
}

func validateSubscribe(s *Subscribe, v Version, lim Limits) error {
	if s.PacketID == 0 {
		return malformed("SUBSCRIBE with packet identifier 0 [MQTT-2.2.1-3]")
	}
	if len(s.Subscriptions) == 0 {
		return protocolErr("SUBSCRIBE without a topic filter [MQTT-3.8.3-2]")
	}
	if v == V5 {
		switch ids := s.Properties.SubscriptionIDs; {
		case len(ids) > 1:
			return protocolErr("more than one Subscription Identifier in SUBSCRIBE (section 3.8.2.1.2)")
		case len(ids) == 1 && ids[0] == 0:
			return protocolErr("Subscription Identifier 0 (section 3.8.2.1.2)")
		}
	}
	for _, sub := range s.Subscriptions {
		switch c := FilterCode(sub, v, lim); c {
		case MalformedPacket, ProtocolError:
			return &Error{Code: c, Reason: "subscription options of " + quote(sub.Filter)}
		}
	}
	return nil
}

// FilterCode returns the SUBACK reason code for one subscription of a
// SUBSCRIBE: the requested QoS (GrantedQoS0/1/2) when it is acceptable,
// TopicFilterInvalid (0x80 before 5.0, which has one failure code) for a
// filter that is not a valid topic filter, has too many levels, or is a
// $share/{ShareName}/{filter} with a bad prefix [MQTT-4.8.2-1]
// [MQTT-4.8.2-2].
//
// It also reports the options that make the whole SUBSCRIBE unacceptable, as
// codes that are not SUBACK codes: ProtocolError in 5.0 for a QoS or Retain
// Handling of 3 (section 3.8.3.1) and for No Local on a shared subscription
// [MQTT-3.8.3-4]; MalformedPacket for QoS 3 before 5.0 [MQTT-3-8.3-4].
// Validate turns those into an error for the packet.
func FilterCode(s Subscription, v Version, lim Limits) ReasonCode {
	o := s.Options
	if o.QoS > 2 {
		if v < V5 {
			return MalformedPacket
		}
		return ProtocolError
	}
	if v == V5 && o.RetainHandling > 2 {
		return ProtocolError
	}
	bad := TopicFilterInvalid
	if v < V5 {
		bad = UnspecifiedError
	}
	_, filter, shared, err := topic.ParseShare(s.Filter)
	if err != nil {
		return bad
	}
	if shared && o.NoLocal && v == V5 {
		return ProtocolError
	}
	if topic.ValidateFilter(filter, lim.levels()) != nil {
		return bad
	}
	return ReasonCode(o.QoS)
}

// clientDisconnectCode reports whether a client may send DISCONNECT with
// reason code c (table 3-10, [MQTT-3.14.2-1]).
func clientDisconnectCode(c ReasonCode) bool {
	switch c {
	case Success, DisconnectWithWill, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid,
		PacketTooLarge, MessageRateTooHigh, QuotaExceeded, AdministrativeAction, PayloadFormatInvalid:
		return true
	}
	return false
}

func validateDisconnect(d *Disconnect, v Version) error {
	if v == V5 && !clientDisconnectCode(d.ReasonCode) {
		return protocolErr(d.ReasonCode.String() + " is not a DISCONNECT reason code a client may send [MQTT-3.14.2-1]")
	}
	return nil
}

// validateAuth checks an AUTH from a client: 5.0 only, reason code Continue
// authentication or Re-authenticate (Success is the server's)
// [MQTT-3.15.2-1], and an Authentication Method (section 3.15.2.2.2).
func validateAuth(a *Auth, v Version) error {
	switch {
	case v != V5:
		return protocolErr("AUTH before MQTT 5.0")
	case a.ReasonCode != ContinueAuthentication && a.ReasonCode != ReAuthenticate:
		return protocolErr(a.ReasonCode.String() + " is not an AUTH reason code a client may send [MQTT-3.15.2-1]")
	case !a.Properties.Has(PropAuthMethod):
		return protocolErr("AUTH without an Authentication Method (section 3.15.2.2.2)")
	}
	return nil
}

// quote shortens a filter for an error message.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}
