package packet

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1 ("MQIsdp")
	V311 Version = 4 // MQTT 3.1.1
	V5   Version = 5 // MQTT 5.0
)

func (v Version) String() string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return "unknown"
}

// Type is the control packet type from the first nibble of the fixed header.
type Type byte

// Control packet types. 0 is reserved; 15 is AUTH in 5.0 and reserved before.
const (
	Reserved Type = iota
	CONNECT
	CONNACK
	PUBLISH
	PUBACK
	PUBREC
	PUBREL
	PUBCOMP
	SUBSCRIBE
	SUBACK
	UNSUBSCRIBE
	UNSUBACK
	PINGREQ
	PINGRESP
	DISCONNECT
	AUTH
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC",
	"PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "INVALID"
}

// Packet is any decoded control packet. The concrete types are the pointer
// types *Connect, *Connack, *Publish, *Ack (PUBACK, PUBREC, PUBREL, PUBCOMP),
// *Subscribe, *Suback, *Unsubscribe, *Unsuback, *Pingreq, *Pingresp,
// *Disconnect and *Auth.
type Packet interface {
	Type() Type
	// Append encodes the packet for protocol version v onto dst and returns
	// the extended slice. It fails only when the packet cannot be represented
	// (a string longer than 65,535 bytes, a remaining length past 268,435,455).
	Append(dst []byte, v Version) ([]byte, error)
}

// UserProperty is one 5.0 User Property name/value pair; order and repeats
// are significant and preserved.
type UserProperty struct {
	Key, Value string
}

// Will is the will message of a CONNECT.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties // 5.0 will properties
}

// Connect is the CONNECT packet.
type Connect struct {
	ProtocolName string // "MQTT" or "MQIsdp"
	Version      Version
	CleanStart   bool // Clean Session in 3.1.1, Clean Start in 5.0
	KeepAlive    uint16
	ClientID     string
	Will         *Will // nil when the will flag is clear
	Username     string
	HasUsername  bool
	Password     []byte
	HasPassword  bool
	Properties   Properties
}

// Connack is the CONNACK packet. In 3.1.1 ReasonCode carries the return code
// (0–5).
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish is the PUBLISH packet. Topic and Payload of a decoded Publish share
// one buffer owned by the packet; they are never the caller's input buffer.
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string
	PacketID   uint16 // only for QoS > 0
	Properties Properties
	Payload    []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP: a packet id, and in 5.0 a reason
// code and properties.
type Ack struct {
	PacketType Type
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// SubOptions are the options byte of one SUBSCRIBE entry.
type SubOptions struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0, 1 or 2
}

// Subscription is one topic filter of a SUBSCRIBE with its options.
type Subscription struct {
	Filter  string
	Options SubOptions
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// Suback is the SUBACK packet: one reason code per filter (granted QoS or a
// failure code; 3.1.1 uses 0x80 for any failure).
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Unsuback is the UNSUBACK packet; ReasonCodes is empty in 3.1.1.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet; reason code and properties are 5.0 only.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is the 5.0 AUTH packet.
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (a *Ack) Type() Type       { return a.PacketType }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
