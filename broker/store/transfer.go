package store

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/mqcluster/mqcluster/broker"
)

// The transfer encoding carries a session from one node to another when its
// client moves: the session record, then its messages (in flight, then
// queued, in order), then the QoS 2 packet ids its client has sent and not
// released, then the messages it was delivered lately (node, id). It is built from the records the store writes, each
// length-prefixed, so that both ends share one definition of a session.

// AppendTransfer appends the transfer encoding of rec, its Messages and its
// AwaitingRel.
func AppendTransfer(b []byte, rec *broker.SessionRecord) []byte {
	b = appendBytes(b, appendSession(nil, rec.ClientID, rec))
	b = AppendMessages(b, rec.Messages)
	b = binary.AppendUvarint(b, uint64(len(rec.AwaitingRel)))
	for _, id := range rec.AwaitingRel {
		b = binary.AppendUvarint(b, uint64(id))
	}
	// Delivered last: a transfer without it (an older node's) decodes to
	// an empty list.
	b = binary.AppendUvarint(b, uint64(len(rec.Delivered)))
	for _, r := range rec.Delivered {
		b = appendString(b, r.Node)
		b = binary.AppendUvarint(b, r.ID)
	}
	return b
}

// AppendMessages appends a count and the records of msgs.
func AppendMessages(b []byte, msgs []broker.StoredMessage) []byte {
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for i := range msgs {
		b = appendBytes(b, appendStored(nil, &msgs[i]))
	}
	return b
}

// DecodeTransfer decodes what AppendTransfer wrote. The result shares
// nothing with b.
func DecodeTransfer(b []byte) (*broker.SessionRecord, error) {
	d := decoder{b: b}
	rec, err := decodeSession(d.raw("session record"))
	if d.err != nil {
		return nil, d.err
	}
	if err != nil {
		return nil, err
	}
	if rec.Messages, err = d.messages(); err != nil {
		return nil, err
	}
	if n := d.count("awaiting rel count", 1); n > 0 {
		rec.AwaitingRel = make([]uint16, n)
		for i := range rec.AwaitingRel {
			rec.AwaitingRel[i] = uint16(d.uvarint("awaiting rel id", math.MaxUint16))
		}
	}
	if len(d.b) > 0 {
		if n := d.count("delivered count", 2); n > 0 {
			rec.Delivered = make([]broker.MessageRef, n)
			for i := range rec.Delivered {
				rec.Delivered[i] = broker.MessageRef{Node: d.string("delivered node"), ID: d.uvarint("delivered id", math.MaxUint64)}
			}
		}
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("session transfer: %w", err)
	}
	return rec, nil
}

// DecodeMessages decodes what AppendMessages wrote.
func DecodeMessages(b []byte) ([]broker.StoredMessage, error) {
	d := decoder{b: b}
	msgs, err := d.messages()
	if err != nil {
		return nil, err
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("session transfer: %w", err)
	}
	return msgs, nil
}

func (d *decoder) messages() ([]broker.StoredMessage, error) {
	n := d.count("message count", 1)
	if d.err != nil {
		return nil, d.err
	}
	var out []broker.StoredMessage
	for range n {
		m, err := decodeStored(d.raw("message record"))
		if d.err != nil {
			return nil, d.err
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, nil
}
