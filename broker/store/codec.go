package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// recordV1 is the first byte of every record this build writes and reads.
const recordV1 = 1

// Stored message flags (byte 1 of the record).
const (
	smRetain   = 1 << 0
	smReleased = 1 << 1
	smKnown    = smRetain | smReleased
)

// Message flags.
const (
	mRetain          = 1 << 0
	mPayloadFormat   = 1 << 1
	mContentType     = 1 << 2
	mResponseTopic   = 1 << 3
	mCorrelationData = 1 << 4
	mID              = 1 << 5 // Node and ID follow the origin
	mKnown           = mRetain | mPayloadFormat | mContentType | mResponseTopic | mCorrelationData | mID
)

// Keys longer than maxRawKey (or empty, or starting with hashedKeyPrefix)
// are stored as hashedKeyPrefix followed by their SHA-256.
const (
	maxRawKey       = 1024
	hashedKeyPrefix = 0xFF
)

// appendKey appends the bbolt key of a client id or topic.
func appendKey(b []byte, s string) []byte {
	if len(s) == 0 || len(s) > maxRawKey || s[0] == hashedKeyPrefix {
		sum := sha256.Sum256([]byte(s))
		b = append(b, hashedKeyPrefix)
		return append(b, sum[:]...)
	}
	return append(b, s...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func boolBit(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

// appendSession appends the session record of rec under client id id;
// rec.Messages and rec.AwaitingRel are not part of it.
func appendSession(b []byte, id string, rec *broker.SessionRecord) []byte {
	b = append(b, recordV1)
	b = appendString(b, id)
	b = append(b, rec.Version)
	b = binary.AppendUvarint(b, uint64(rec.Expiry))
	b = appendString(b, rec.Username)
	b = binary.AppendVarint(b, rec.DisconnectedAt)
	b = binary.AppendUvarint(b, uint64(len(rec.Subscriptions)))
	for i := range rec.Subscriptions {
		s := &rec.Subscriptions[i]
		b = appendString(b, s.Filter)
		b = appendString(b, s.Group)
		b = appendString(b, s.Real)
		b = append(b, s.Opts.QoS|boolBit(s.Opts.NoLocal, 1<<2)|boolBit(s.Opts.RetainAsPublished, 1<<3)|s.Opts.RetainHandling<<4)
		b = binary.AppendUvarint(b, uint64(s.SubID))
	}
	return b
}

// appendStored appends the record of a stored message.
func appendStored(b []byte, m *broker.StoredMessage) []byte {
	b = append(b, recordV1, boolBit(m.Retain, smRetain)|boolBit(m.Released, smReleased))
	b = binary.AppendUvarint(b, m.Seq)
	b = binary.AppendUvarint(b, uint64(m.PacketID))
	b = append(b, m.QoS)
	b = binary.AppendUvarint(b, uint64(len(m.SubIDs)))
	for _, id := range m.SubIDs {
		b = binary.AppendUvarint(b, uint64(id))
	}
	b = appendString(b, m.ShareFilter)
	b = appendString(b, m.ShareGroup)
	return appendMessage(b, m.Msg)
}

// appendRetained appends the record of a retained message.
func appendRetained(b []byte, m *broker.Message) []byte {
	return appendMessage(append(b, recordV1), m)
}

func appendMessage(b []byte, m *broker.Message) []byte {
	p := &m.Props
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = append(b, m.QoS, boolBit(m.Retain, mRetain)|
		boolBit(p.Has(packet.PropPayloadFormat), mPayloadFormat)|
		boolBit(p.Has(packet.PropContentType), mContentType)|
		boolBit(p.Has(packet.PropResponseTopic), mResponseTopic)|
		boolBit(p.Has(packet.PropCorrelationData), mCorrelationData)|
		boolBit(m.ID != 0, mID))
	if p.Has(packet.PropPayloadFormat) {
		b = append(b, p.PayloadFormat)
	}
	if p.Has(packet.PropContentType) {
		b = appendString(b, p.ContentType)
	}
	if p.Has(packet.PropResponseTopic) {
		b = appendString(b, p.ResponseTopic)
	}
	if p.Has(packet.PropCorrelationData) {
		b = appendBytes(b, p.CorrelationData)
	}
	b = binary.AppendUvarint(b, uint64(len(p.UserProperties)))
	for _, u := range p.UserProperties {
		b = appendString(b, u.Key)
		b = appendString(b, u.Value)
	}
	b = binary.AppendVarint(b, m.ExpiresAt)
	b = appendString(b, m.Origin)
	if m.ID != 0 {
		b = appendString(b, m.Node)
		b = binary.AppendUvarint(b, m.ID)
	}
	return b
}

// decoder reads a record. The first error sticks; every read after it
// returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *decoder) byte(what string) byte {
	if len(d.b) == 0 {
		d.fail("%s: truncated", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	if v > max {
		d.fail("%s: %d out of range", what, v)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads the element count of a list whose elements take at least
// size bytes each, so that a corrupt count cannot make the caller allocate
// more than a small multiple of the record's size.
func (d *decoder) count(what string, size int) int {
	return int(d.uvarint(what, uint64(len(d.b)/size)))
}

// raw returns the next length-prefixed bytes, still in the input.
func (d *decoder) raw(what string) []byte {
	n := d.uvarint(what+" length", math.MaxInt32)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s: length %d exceeds the %d bytes left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string) string { return string(d.raw(what)) }

// bytes returns a copy of the next length-prefixed bytes; nil when empty.
func (d *decoder) bytes(what string) []byte {
	v := d.raw(what)
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) qos(what string) byte {
	q := d.byte(what)
	if q > 2 {
		d.fail("%s: %d", what, q)
	}
	return q
}

func (d *decoder) version() {
	if v := d.byte("record version"); d.err == nil && v != recordV1 {
		d.fail("unknown record version %d", v)
	}
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// decodeSession decodes a session record. The result shares nothing with b.
func decodeSession(b []byte) (*broker.SessionRecord, error) {
	d := decoder{b: b}
	d.version()
	rec := &broker.SessionRecord{}
	rec.ClientID = d.string("client id")
	rec.Version = d.byte("protocol version")
	rec.Expiry = uint32(d.uvarint("session expiry", math.MaxUint32))
	rec.Username = d.string("username")
	rec.DisconnectedAt = d.varint("disconnected at")
	if n := d.count("subscription count", 5); n > 0 {
		rec.Subscriptions = make([]broker.Subscription, n)
		for i := range rec.Subscriptions {
			s := &rec.Subscriptions[i]
			s.Filter = d.string("subscription filter")
			s.Group = d.string("subscription group")
			s.Real = d.string("subscription real filter")
			o := d.byte("subscription options")
			if o&0xC0 != 0 || o&3 > 2 || (o>>4)&3 > 2 {
				d.fail("subscription options %#x", o)
			}
			s.Opts = packet.SubOptions{QoS: o & 3, NoLocal: o&(1<<2) != 0, RetainAsPublished: o&(1<<3) != 0, RetainHandling: (o >> 4) & 3}
			s.SubID = uint32(d.uvarint("subscription id", math.MaxUint32))
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return rec, nil
}

// decodeStored decodes a stored message record. The result shares nothing
// with b.
func decodeStored(b []byte) (*broker.StoredMessage, error) {
	d := decoder{b: b}
	d.version()
	m := &broker.StoredMessage{}
	f := d.byte("flags")
	if f&^smKnown != 0 {
		d.fail("unknown flags %#x", f)
	}
	m.Retain, m.Released = f&smRetain != 0, f&smReleased != 0
	m.Seq = d.uvarint("seq", math.MaxUint64)
	m.PacketID = uint16(d.uvarint("packet id", math.MaxUint16))
	m.QoS = d.qos("qos")
	if n := d.count("subscription id count", 1); n > 0 {
		m.SubIDs = make([]uint32, n)
		for i := range m.SubIDs {
			m.SubIDs[i] = uint32(d.uvarint("subscription id", math.MaxUint32))
		}
	}
	m.ShareFilter = d.string("share filter")
	m.ShareGroup = d.string("share group")
	m.Msg = d.message()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeRetained decodes a retained record. The result shares nothing with
// b.
func decodeRetained(b []byte) (*broker.Message, error) {
	d := decoder{b: b}
	d.version()
	m := d.message()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

func (d *decoder) message() *broker.Message {
	m := &broker.Message{}
	m.Topic = d.string("topic")
	m.Payload = d.bytes("payload")
	m.QoS = d.qos("message qos")
	f := d.byte("message flags")
	if f&^mKnown != 0 {
		d.fail("unknown message flags %#x", f)
	}
	m.Retain = f&mRetain != 0
	p := &m.Props
	if f&mPayloadFormat != 0 {
		p.PayloadFormat = d.byte("payload format")
		p.Set(packet.PropPayloadFormat)
	}
	if f&mContentType != 0 {
		p.ContentType = d.string("content type")
		p.Set(packet.PropContentType)
	}
	if f&mResponseTopic != 0 {
		p.ResponseTopic = d.string("response topic")
		p.Set(packet.PropResponseTopic)
	}
	if f&mCorrelationData != 0 {
		p.CorrelationData = d.bytes("correlation data")
		p.Set(packet.PropCorrelationData)
	}
	if n := d.count("user property count", 2); n > 0 {
		p.UserProperties = make([]packet.UserProperty, n)
		for i := range p.UserProperties {
			p.UserProperties[i].Key = d.string("user property key")
			p.UserProperties[i].Value = d.string("user property value")
		}
	}
	m.ExpiresAt = d.varint("expires at")
	m.Origin = d.string("origin")
	if f&mID != 0 {
		m.Node = d.string("message node")
		m.ID = d.uvarint("message id", math.MaxUint64)
	}
	return m
}
