package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/bits"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// The packed layout of forwarded messages (ForwardBatch.packed): the
// messages of a batch one after the other, each a record
//
//	record  = uvarint(len(body)) body
//	body    = flags qos msg_id topic payload origin_client_id origin_node
//	          [properties] [expires_at_unix_ms] [shared] [kick_client_id]
//	          [to_client_id] [to_packet_id] [to_state_index] [to_hops]
//
// (will is a flag only)
//
// flags, qos, msg_id, to_packet_id, to_state_index and to_hops are uvarints; the strings and byte fields are a
// uvarint length and the bytes; expires_at_unix_ms is a zig-zag varint;
// shared is a uvarint count and that many (group, filter) pairs of
// length-prefixed strings. The optional fields are present when their flag
// is set and in the order above. Bytes left in a body after the fields its
// flags announce are skipped: a later version appends new fields there,
// behind new flag bits. Every field of pb.ForwardedMessage travels; empty
// strings and bytes are left out (as protobuf leaves them out).
//
// A Send encodes its message into the peer's outbox once; a batch is those
// records copied one after the other into the gRPC buffer. The receiver
// slices the fields out of the batch's buffer without copying (Message).

const (
	flagRetain = 1 << iota
	flagSharedOnly
	flagProperties
	flagExpires
	flagShared
	flagKick
	flagTo
	flagToPacketID
	flagToStateIndex
	flagToHops
	flagWill
)

// Message is one forwarded message decoded from a batch: every field of
// pb.ForwardedMessage, the strings and bytes as views of the batch's
// buffer. A Deliverer reads it during DeliverForwarded only and copies what
// it keeps; it must not modify the bytes.
type Message struct {
	MsgID           uint64
	Topic           []byte
	Payload         []byte
	QoS             uint32
	Retain          bool
	Properties      []byte
	ExpiresAtUnixMs int64
	OriginClientID  []byte
	OriginNode      []byte
	SharedOnly      bool
	KickClientID    []byte
	ToClientID      []byte
	ToPacketID      uint32
	ToStateIndex    uint64
	ToHops          uint32
	Will            bool

	nShared int
	shared  []byte // nShared (group, filter) pairs, checked by the decoder
}

// NumShared is the number of share groups the message is for
// (pb.ForwardedMessage.shared).
func (m *Message) NumShared() int { return m.nShared }

// Shared yields the (group, filter) of every share group the message is
// for, as views of the batch's buffer.
func (m *Message) Shared() iter.Seq2[[]byte, []byte] {
	return func(yield func(group, filter []byte) bool) {
		b := m.shared
		for range m.nShared {
			var g, f []byte
			g, b, _ = readBytes(b)
			f, b, _ = readBytes(b)
			if !yield(g, f) {
				return
			}
		}
	}
}

// Proto is a copy of m as a pb.ForwardedMessage.
func (m *Message) Proto() *pb.ForwardedMessage {
	fm := &pb.ForwardedMessage{
		MsgId:           m.MsgID,
		Topic:           string(m.Topic),
		Payload:         cloneBytes(m.Payload),
		Qos:             m.QoS,
		Retain:          m.Retain,
		Properties:      cloneBytes(m.Properties),
		ExpiresAtUnixMs: m.ExpiresAtUnixMs,
		OriginClientId:  string(m.OriginClientID),
		OriginNode:      string(m.OriginNode),
		SharedOnly:      m.SharedOnly,
		KickClientId:    string(m.KickClientID),
		ToClientId:      string(m.ToClientID),
		ToPacketId:      m.ToPacketID,
		ToStateIndex:    m.ToStateIndex,
		ToHops:          m.ToHops,
		Will:            m.Will,
	}
	for g, f := range m.Shared() {
		fm.Shared = append(fm.Shared, &pb.SharedTarget{Group: string(g), Filter: string(f)})
	}
	return fm
}

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// bodySize is the length of m's record body, whose flags are flags.
func bodySize(m *pb.ForwardedMessage, flags uint) int {
	n := uvarintLen(uint64(flags)) + uvarintLen(uint64(m.Qos)) + uvarintLen(m.MsgId) +
		fieldLen(len(m.Topic)) + fieldLen(len(m.Payload)) +
		fieldLen(len(m.OriginClientId)) + fieldLen(len(m.OriginNode))
	if len(m.Properties) > 0 {
		n += fieldLen(len(m.Properties))
	}
	if m.ExpiresAtUnixMs != 0 {
		n += uvarintLen(zigzag(m.ExpiresAtUnixMs))
	}
	if len(m.Shared) > 0 {
		n += uvarintLen(uint64(len(m.Shared)))
		for _, s := range m.Shared {
			n += fieldLen(len(s.Group)) + fieldLen(len(s.Filter))
		}
	}
	if m.KickClientId != "" {
		n += fieldLen(len(m.KickClientId))
	}
	if m.ToClientId != "" {
		n += fieldLen(len(m.ToClientId))
	}
	if m.ToPacketId != 0 {
		n += uvarintLen(uint64(m.ToPacketId))
	}
	if m.ToStateIndex != 0 {
		n += uvarintLen(m.ToStateIndex)
	}
	if m.ToHops != 0 {
		n += uvarintLen(uint64(m.ToHops))
	}
	return n
}

// recordSize is the length of m's record: what it adds to a packed batch.
func recordSize(m *pb.ForwardedMessage) int {
	n := bodySize(m, flagsOf(m))
	return uvarintLen(uint64(n)) + n
}

// appendRecord appends m's record to b.
func appendRecord(b []byte, m *pb.ForwardedMessage) []byte {
	flags := flagsOf(m)
	b = binary.AppendUvarint(b, uint64(bodySize(m, flags)))
	b = binary.AppendUvarint(b, uint64(flags)) // one byte below flagToPacketID
	b = binary.AppendUvarint(b, uint64(m.Qos))
	b = binary.AppendUvarint(b, m.MsgId)
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = appendString(b, m.OriginClientId)
	b = appendString(b, m.OriginNode)
	if flags&flagProperties != 0 {
		b = appendBytes(b, m.Properties)
	}
	if flags&flagExpires != 0 {
		b = binary.AppendUvarint(b, zigzag(m.ExpiresAtUnixMs))
	}
	if flags&flagShared != 0 {
		b = binary.AppendUvarint(b, uint64(len(m.Shared)))
		for _, s := range m.Shared {
			b = appendString(b, s.Group)
			b = appendString(b, s.Filter)
		}
	}
	if flags&flagKick != 0 {
		b = appendString(b, m.KickClientId)
	}
	if flags&flagTo != 0 {
		b = appendString(b, m.ToClientId)
	}
	if flags&flagToPacketID != 0 {
		b = binary.AppendUvarint(b, uint64(m.ToPacketId))
	}
	if flags&flagToStateIndex != 0 {
		b = binary.AppendUvarint(b, m.ToStateIndex)
	}
	if flags&flagToHops != 0 {
		b = binary.AppendUvarint(b, uint64(m.ToHops))
	}
	return b
}

// flagsOf is the flags of m's record: which optional fields it carries.
func flagsOf(m *pb.ForwardedMessage) uint {
	var flags uint
	if m.Retain {
		flags |= flagRetain
	}
	if m.SharedOnly {
		flags |= flagSharedOnly
	}
	if len(m.Properties) > 0 {
		flags |= flagProperties
	}
	if m.ExpiresAtUnixMs != 0 {
		flags |= flagExpires
	}
	if len(m.Shared) > 0 {
		flags |= flagShared
	}
	if m.KickClientId != "" {
		flags |= flagKick
	}
	if m.ToClientId != "" {
		flags |= flagTo
	}
	if m.ToPacketId != 0 {
		flags |= flagToPacketID
	}
	if m.ToStateIndex != 0 {
		flags |= flagToStateIndex
	}
	if m.ToHops != 0 {
		flags |= flagToHops
	}
	if m.Will {
		flags |= flagWill
	}
	return flags
}

// errMalformed is what decoding a packed batch fails with; it wraps
// ErrInvalid.
var errMalformed = fmt.Errorf("%w: malformed packed batch", ErrInvalid)

// decodePacked appends the messages of a packed batch to dst. The views
// alias b. It fails, appending nothing, on a batch that is not a whole
// number of well-formed records.
func decodePacked(b []byte, dst []Message) ([]Message, error) {
	start := len(dst)
	for i := 0; len(b) > 0; i++ {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return dst[:start], fmt.Errorf("%w: record %d: bad length", errMalformed, i)
		}
		body := b[k : k+int(n)]
		b = b[k+int(n):]
		dst = append(dst, Message{})
		if err := decodeBody(body, &dst[len(dst)-1]); err != nil {
			clear(dst[start:])
			return dst[:start], fmt.Errorf("%w: record %d: %w", errMalformed, i, err)
		}
	}
	return dst, nil
}

var (
	errTruncated = errors.New("truncated")
	errOverflow  = errors.New("value out of range")
)

func decodeBody(b []byte, m *Message) error {
	flags, b, err := readUvarint(b)
	if err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	qos, b, err := readUvarint(b)
	if err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	if qos > 1<<32-1 {
		return fmt.Errorf("qos: %w", errOverflow)
	}
	m.QoS = uint32(qos)
	m.Retain = flags&flagRetain != 0
	m.SharedOnly = flags&flagSharedOnly != 0
	m.Will = flags&flagWill != 0
	if m.MsgID, b, err = readUvarint(b); err != nil {
		return fmt.Errorf("msg_id: %w", err)
	}
	if m.Topic, b, err = readBytes(b); err != nil {
		return fmt.Errorf("topic: %w", err)
	}
	if m.Payload, b, err = readBytes(b); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if m.OriginClientID, b, err = readBytes(b); err != nil {
		return fmt.Errorf("origin_client_id: %w", err)
	}
	if m.OriginNode, b, err = readBytes(b); err != nil {
		return fmt.Errorf("origin_node: %w", err)
	}
	if flags&flagProperties != 0 {
		if m.Properties, b, err = readBytes(b); err != nil {
			return fmt.Errorf("properties: %w", err)
		}
	}
	if flags&flagExpires != 0 {
		var z uint64
		if z, b, err = readUvarint(b); err != nil {
			return fmt.Errorf("expires_at_unix_ms: %w", err)
		}
		m.ExpiresAtUnixMs = unzigzag(z)
	}
	if flags&flagShared != 0 {
		var n uint64
		if n, b, err = readUvarint(b); err != nil {
			return fmt.Errorf("shared: %w", err)
		}
		if n > uint64(len(b))/2 { // every pair takes two bytes at least
			return fmt.Errorf("shared: %w", errTruncated)
		}
		start := b
		for range n {
			if _, b, err = readBytes(b); err == nil {
				_, b, err = readBytes(b)
			}
			if err != nil {
				return fmt.Errorf("shared: %w", err)
			}
		}
		m.nShared, m.shared = int(n), start[:len(start)-len(b)]
	}
	if flags&flagKick != 0 {
		if m.KickClientID, b, err = readBytes(b); err != nil {
			return fmt.Errorf("kick_client_id: %w", err)
		}
	}
	if flags&flagTo != 0 {
		if m.ToClientID, b, err = readBytes(b); err != nil {
			return fmt.Errorf("to_client_id: %w", err)
		}
	}
	if flags&flagToPacketID != 0 {
		var id uint64
		if id, b, err = readUvarint(b); err != nil {
			return fmt.Errorf("to_packet_id: %w", err)
		}
		if id > 1<<16-1 {
			return fmt.Errorf("to_packet_id: %w", errOverflow)
		}
		m.ToPacketID = uint32(id)
	}
	if flags&flagToStateIndex != 0 {
		if m.ToStateIndex, b, err = readUvarint(b); err != nil {
			return fmt.Errorf("to_state_index: %w", err)
		}
	}
	if flags&flagToHops != 0 {
		var h uint64
		if h, _, err = readUvarint(b); err != nil {
			return fmt.Errorf("to_hops: %w", err)
		}
		if h > 1<<32-1 {
			return fmt.Errorf("to_hops: %w", errOverflow)
		}
		m.ToHops = uint32(h)
	}
	return nil // what follows belongs to fields of a later version
}

func readUvarint(b []byte) (uint64, []byte, error) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), b[1:], nil // most lengths and flags
	}
	v, k := binary.Uvarint(b)
	switch {
	case k == 0:
		return 0, b, errTruncated
	case k < 0:
		return 0, b, errOverflow
	}
	return v, b[k:], nil
}

// readBytes reads a length-prefixed field; the result's capacity ends
// with it, so that an append to it cannot overwrite what follows.
func readBytes(b []byte) ([]byte, []byte, error) {
	n, rest, err := readUvarint(b)
	if err != nil {
		return nil, b, err
	}
	if n > uint64(len(rest)) {
		return nil, b, errTruncated
	}
	if n == 0 {
		return nil, rest, nil
	}
	return rest[:n:n], rest[n:], nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func fieldLen(n int) int { return uvarintLen(uint64(n)) + n }

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
