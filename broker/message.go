package broker

import (
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Message is one application message as the broker routes it: immutable once
// built, shared by every subscriber it is delivered to.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Props are the properties passed through to subscribers unchanged:
	// payload format, content type, response topic, correlation data and user
	// properties. Message Expiry is carried in ExpiresAt instead.
	Props packet.Properties
	// ExpiresAt is the unix-nanosecond deadline of the Message Expiry
	// Interval, 0 when the message never expires.
	ExpiresAt int64
	// Origin is the publishing client id ("" for wills and the server).
	Origin string
	// Node and ID name the message across the cluster: ID is drawn by the
	// node that received it from its publisher, Node is that node ("" for
	// this one). A session handed from one node to another meets the
	// messages that reached both on the way only once by them.
	Node string
	ID   uint64
	// SharesSet says that the cluster chose which nodes serve the share
	// groups matching the message: this node delivers it to the groups in
	// Shares only. The cluster sets both before the message is routed.
	SharesSet bool
	Shares    []ShareTarget
	// SharedOnly: this node delivers the message to the groups in Shares
	// and to no other subscriber.
	SharedOnly bool
	// Will: the message is a will, which no publisher sends again when a
	// node does not take it: the cluster does (Cluster.Forward).
	Will bool
}

// newMessage builds a routed message from an inbound PUBLISH. The packet's
// buffers become the message's: the caller must not reuse p.
func newMessage(p *packet.Publish, origin string, now time.Time) *Message {
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Origin: origin}
	copyPassThrough(&m.Props, &p.Properties)
	if p.Properties.Has(packet.PropMessageExpiry) {
		m.ExpiresAt = now.Add(time.Duration(p.Properties.MessageExpiry) * time.Second).UnixNano()
	}
	return m
}

// copyPassThrough copies the properties a server forwards to subscribers
// unchanged ([MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17],
// [MQTT-3.3.2-20]).
func copyPassThrough(dst, src *packet.Properties) {
	if src.Has(packet.PropPayloadFormat) {
		dst.PayloadFormat = src.PayloadFormat
		dst.Set(packet.PropPayloadFormat)
	}
	if src.Has(packet.PropContentType) {
		dst.ContentType = src.ContentType
		dst.Set(packet.PropContentType)
	}
	if src.Has(packet.PropResponseTopic) {
		dst.ResponseTopic = src.ResponseTopic
		dst.Set(packet.PropResponseTopic)
	}
	if src.Has(packet.PropCorrelationData) {
		dst.CorrelationData = src.CorrelationData
		dst.Set(packet.PropCorrelationData)
	}
	dst.UserProperties = src.UserProperties
}

// expired reports whether the message's expiry interval has passed.
func (m *Message) expired(now int64) bool { return m.ExpiresAt != 0 && now >= m.ExpiresAt }

// size is the message's weight against queue byte limits.
func (m *Message) size() int { return len(m.Topic) + len(m.Payload) + 64 }

// outMsg is one message on its way to one session: the shared message plus
// what differs per subscriber.
type outMsg struct {
	msg      *Message
	subIDs   []uint32
	share    *shareRef // the share group it came through, if any
	seq      uint64    // store sequence; 0 when not stored
	packetID uint16
	qos      byte
	retain   bool
	dup      bool
	state    outState
	restored bool // loaded from the store when this node started
}

type outState byte

const (
	stateQueued  outState = iota // waiting for a free in-flight slot
	statePublish                 // PUBLISH sent, waiting for PUBACK / PUBREC
	stateRel                     // PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// record is the stored form of a delivery.
func (o *outMsg) record() *StoredMessage {
	r := &StoredMessage{Seq: o.seq, PacketID: o.packetID, QoS: o.qos, Retain: o.retain,
		Released: o.state == stateRel, SubIDs: o.subIDs, Msg: o.msg, Restored: o.restored}
	if o.share != nil {
		r.ShareFilter, r.ShareGroup = o.share.filter, o.share.group
	}
	return r
}
