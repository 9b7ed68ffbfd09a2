package store

import (
	"errors"
	"reflect"
	"testing"

	"github.com/mqcluster/mqcluster/broker"
)

// A session moving between nodes arrives whole: record, messages in order,
// QoS 2 packet ids awaiting PUBREL, and the messages its client was
// delivered lately.
func TestTransferRoundTrip(t *testing.T) {
	rec := sessionRecord("c")
	inflight := storedMessage(7, fullMessage("a/b"))
	inflight.PacketID, inflight.Released = 12, true
	rec.Messages = []broker.StoredMessage{*inflight, *storedMessage(8, bareMessage("a/c"))}
	rec.AwaitingRel = []uint16{1, 65535}
	rec.Delivered = []broker.MessageRef{{Node: "n1", ID: 1<<63 + 5}, {Node: "", ID: 9}}
	got, err := DecodeTransfer(AppendTransfer(nil, rec))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, rec)
	}

	// A node without the delivered list sends none: an empty one.
	bare := &broker.SessionRecord{ClientID: "old"}
	b := AppendTransfer(nil, bare)
	old := b[:len(b)-1] // the trailing count of Delivered
	got, err = DecodeTransfer(old)
	if err != nil || got.ClientID != "old" || got.Delivered != nil {
		t.Fatalf("transfer without delivered list: %+v, %v", got, err)
	}
}

// Damage anywhere is an ErrCorrupt, never a panic or a huge allocation.
func TestTransferCorrupt(t *testing.T) {
	rec := sessionRecord("c")
	rec.Messages = []broker.StoredMessage{*storedMessage(1, fullMessage("t"))}
	withoutDelivered := AppendTransfer(nil, rec)
	// Up to the delivered list, whose count is the last byte here.
	prefix := withoutDelivered[:len(withoutDelivered)-1]
	rec.Delivered = []broker.MessageRef{{Node: "n2", ID: 3}}
	b := AppendTransfer(nil, rec)
	for i := 1; i < len(b); i++ {
		_, err := DecodeTransfer(b[:i])
		if i == len(prefix) {
			// Reads as a transfer from a node that sends no list.
			if err != nil {
				t.Fatalf("cut before the delivered list: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d of %d bytes: %v, want ErrCorrupt", i, len(b), err)
		}
	}
	huge := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0x7f)
	if _, err := DecodeTransfer(huge); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("absurd delivered count: %v, want ErrCorrupt", err)
	}
}
