package packet

// PropID is an MQTT 5.0 property identifier.
type PropID byte

// Property identifiers (MQTT 5.0 section 2.2.2.2).
const (
	PropPayloadFormat        PropID = 0x01
	PropMessageExpiry        PropID = 0x02
	PropContentType          PropID = 0x03
	PropResponseTopic        PropID = 0x08
	PropCorrelationData      PropID = 0x09
	PropSubscriptionID       PropID = 0x0B
	PropSessionExpiry        PropID = 0x11
	PropAssignedClientID     PropID = 0x12
	PropServerKeepAlive      PropID = 0x13
	PropAuthMethod           PropID = 0x15
	PropAuthData             PropID = 0x16
	PropRequestProblemInfo   PropID = 0x17
	PropWillDelay            PropID = 0x18
	PropRequestResponseInfo  PropID = 0x19
	PropResponseInfo         PropID = 0x1A
	PropServerReference      PropID = 0x1C
	PropReasonString         PropID = 0x1F
	PropReceiveMaximum       PropID = 0x21
	PropTopicAliasMaximum    PropID = 0x22
	PropTopicAlias           PropID = 0x23
	PropMaximumQoS           PropID = 0x24
	PropRetainAvailable      PropID = 0x25
	PropUserProperty         PropID = 0x26
	PropMaximumPacketSize    PropID = 0x27
	PropWildcardSubAvailable PropID = 0x28
	PropSubIDAvailable       PropID = 0x29
	PropSharedSubAvailable   PropID = 0x2A

	maxPropID = 0x2A
)

// Properties holds the 5.0 properties of a packet. A property is present when
// its bit is set in the mask (Has / Set); User Property and Subscription
// Identifier may repeat and are present when their slices are non-empty.
type Properties struct {
	mask uint64

	PayloadFormat        byte
	MessageExpiry        uint32
	ContentType          string
	ResponseTopic        string
	CorrelationData      []byte
	SubscriptionIDs      []uint32 // one in SUBSCRIBE; any number in PUBLISH
	SessionExpiry        uint32
	AssignedClientID     string
	ServerKeepAlive      uint16
	AuthMethod           string
	AuthData             []byte
	RequestProblemInfo   byte
	WillDelay            uint32
	RequestResponseInfo  byte
	ResponseInfo         string
	ServerReference      string
	ReasonString         string
	ReceiveMaximum       uint16
	TopicAliasMaximum    uint16
	TopicAlias           uint16
	MaximumQoS           byte
	RetainAvailable      byte
	UserProperties       []UserProperty
	MaximumPacketSize    uint32
	WildcardSubAvailable byte
	SubIDAvailable       byte
	SharedSubAvailable   byte
}

// Has reports whether property id is present.
func (p *Properties) Has(id PropID) bool {
	switch id {
	case PropUserProperty:
		return len(p.UserProperties) > 0
	case PropSubscriptionID:
		return len(p.SubscriptionIDs) > 0
	}
	return id <= maxPropID && p.mask&(1<<id) != 0
}

// Set marks property id as present; the field itself is set by the caller.
// User Property and Subscription Identifier need no mark.
func (p *Properties) Set(id PropID) {
	if id <= maxPropID {
		p.mask |= 1 << id
	}
}

// Clear marks property id as absent and zeroes its field.
func (p *Properties) Clear(id PropID) {
	if id > maxPropID {
		return
	}
	p.mask &^= 1 << id
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat = 0
	case PropMessageExpiry:
		p.MessageExpiry = 0
	case PropContentType:
		p.ContentType = ""
	case PropResponseTopic:
		p.ResponseTopic = ""
	case PropCorrelationData:
		p.CorrelationData = nil
	case PropSubscriptionID:
		p.SubscriptionIDs = nil
	case PropSessionExpiry:
		p.SessionExpiry = 0
	case PropAssignedClientID:
		p.AssignedClientID = ""
	case PropServerKeepAlive:
		p.ServerKeepAlive = 0
	case PropAuthMethod:
		p.AuthMethod = ""
	case PropAuthData:
		p.AuthData = nil
	case PropRequestProblemInfo:
		p.RequestProblemInfo = 0
	case PropWillDelay:
		p.WillDelay = 0
	case PropRequestResponseInfo:
		p.RequestResponseInfo = 0
	case PropResponseInfo:
		p.ResponseInfo = ""
	case PropServerReference:
		p.ServerReference = ""
	case PropReasonString:
		p.ReasonString = ""
	case PropReceiveMaximum:
		p.ReceiveMaximum = 0
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = 0
	case PropTopicAlias:
		p.TopicAlias = 0
	case PropMaximumQoS:
		p.MaximumQoS = 0
	case PropRetainAvailable:
		p.RetainAvailable = 0
	case PropUserProperty:
		p.UserProperties = nil
	case PropMaximumPacketSize:
		p.MaximumPacketSize = 0
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = 0
	case PropSubIDAvailable:
		p.SubIDAvailable = 0
	case PropSharedSubAvailable:
		p.SharedSubAvailable = 0
	}
}

// IsZero reports whether no property is present.
func (p *Properties) IsZero() bool {
	return p.mask == 0 && len(p.UserProperties) == 0 && len(p.SubscriptionIDs) == 0
}
