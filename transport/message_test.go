package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// fullMessage has every field of pb.ForwardedMessage set
// (TestRecordCarriesEveryField checks that it does).
func fullMessage() *pb.ForwardedMessage {
	return &pb.ForwardedMessage{
		MsgId:           math.MaxUint64 - 7,
		Topic:           "sensors/site-1/température",
		Payload:         []byte{0, 1, 2, 0xff, 'x'},
		Qos:             2,
		Retain:          true,
		Properties:      []byte{5, 3, 0, 1, 'a', 0x01},
		ExpiresAtUnixMs: 1_780_000_000_123,
		OriginClientId:  "publisher-7",
		OriginNode:      "n0",
		Shared: []*pb.SharedTarget{
			{Group: "g1", Filter: "sensors/#"},
			{Group: "", Filter: "sensors/+/température"},
			{Group: "g3", Filter: ""},
		},
		SharedOnly:   true,
		KickClientId: "kicked",
		ToClientId:   "handed-on",
		ToPacketId:   65535,
		ToStateIndex: math.MaxUint64 - 1,
		ToHops:       math.MaxUint32,
		Will:         true,
	}
}

var recordCases = []struct {
	name string
	m    *pb.ForwardedMessage
}{
	{"every field", fullMessage()},
	{"empty", &pb.ForwardedMessage{}},
	{"plain QoS 0", &pb.ForwardedMessage{MsgId: 1, Topic: "a/b", Payload: make([]byte, 64), OriginClientId: "c", OriginNode: "n1"}},
	{"negative expiry", &pb.ForwardedMessage{MsgId: 2, Topic: "t", ExpiresAtUnixMs: -5}},
	{"large payload", &pb.ForwardedMessage{MsgId: 3, Topic: "t", Payload: bytes.Repeat([]byte{7}, 70000)}},
	{"QoS beyond MQTT", &pb.ForwardedMessage{Qos: math.MaxUint32}},
	{"kick only", &pb.ForwardedMessage{KickClientId: "c1"}},
	{"to a session", &pb.ForwardedMessage{MsgId: 4, Topic: "t", Qos: 1, ToClientId: "c2", OriginNode: "n2"}},
	{"to a session, with its packet id", &pb.ForwardedMessage{MsgId: 6, Topic: "t", Qos: 2, ToClientId: "c3", ToPacketId: 7}},
	{"passed on by a node without the session", &pb.ForwardedMessage{MsgId: 8, Topic: "t", Qos: 1, ToClientId: "c4", ToStateIndex: 1234, ToHops: 1}},
	{"a will", &pb.ForwardedMessage{MsgId: 9, Topic: "will/c", Qos: 1, OriginNode: "n3", Will: true}},
	{"one share group", &pb.ForwardedMessage{MsgId: 5, Topic: "t", Shared: []*pb.SharedTarget{{Group: "g", Filter: "t"}}}},
}

func TestRecordCarriesEveryField(t *testing.T) {
	m := fullMessage().ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); !m.Has(fd) {
			t.Errorf("fullMessage leaves %s unset: set it, and carry it in the packed layout", fd.Name())
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var batch []byte
	for _, tc := range recordCases {
		rec := appendRecord(nil, tc.m)
		if len(rec) != recordSize(tc.m) {
			t.Errorf("%s: recordSize %d, appendRecord wrote %d", tc.name, recordSize(tc.m), len(rec))
		}
		msgs, err := decodePacked(rec, nil)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: decoded %d messages, err %v", tc.name, len(msgs), err)
		}
		if got := msgs[0].Proto(); !proto.Equal(got, tc.m) {
			t.Errorf("%s: round trip changed the message:\n got %v\nwant %v", tc.name, got, tc.m)
		}
		if msgs[0].NumShared() != len(tc.m.Shared) {
			t.Errorf("%s: NumShared %d, want %d", tc.name, msgs[0].NumShared(), len(tc.m.Shared))
		}
		batch = append(batch, rec...)
	}
	// A batch is the records one after the other; the views stay valid
	// while more are decoded into the same slice.
	msgs, err := decodePacked(batch, make([]Message, 0, 1))
	if err != nil || len(msgs) != len(recordCases) {
		t.Fatalf("batch: decoded %d messages, err %v", len(msgs), err)
	}
	for i, tc := range recordCases {
		if got := msgs[i].Proto(); !proto.Equal(got, tc.m) {
			t.Errorf("batch, %s: got %v", tc.name, got)
		}
	}
}

// A field's view cannot be appended to over the next field.
func TestRecordViewsAreCapped(t *testing.T) {
	msgs, err := decodePacked(appendRecord(nil, fullMessage()), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	for name, b := range map[string][]byte{"topic": m.Topic, "payload": m.Payload, "properties": m.Properties,
		"origin_client_id": m.OriginClientID, "origin_node": m.OriginNode} {
		if cap(b) != len(b) {
			t.Errorf("%s: cap %d, len %d", name, cap(b), len(b))
		}
	}
}

// Bytes after the fields a record's flags announce are fields of a later
// version: skipped, the message still decodes.
func TestRecordSkipsLaterFields(t *testing.T) {
	m := fullMessage()
	rec := appendRecord(nil, m)
	_, k := binary.Uvarint(rec)
	old := rec[k:]
	// flags with a bit of a later version set, and its field after the
	// known ones.
	flags, n := binary.Uvarint(old)
	body := binary.AppendUvarint(nil, flags|1<<12)
	body = append(body, old[n:]...)
	body = append(body, 0x42, 0x01, 0x02)
	later := append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	msgs, err := decodePacked(later, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := msgs[0].Proto(); !proto.Equal(got, m) {
		t.Errorf("got %v\nwant %v", got, m)
	}
}

func TestDecodePackedRejectsTruncated(t *testing.T) {
	batch := appendRecord(nil, fullMessage())
	batch = appendRecord(batch, recordCases[2].m)
	first := recordSize(fullMessage())
	for n := 1; n < len(batch); n++ {
		if n == first {
			continue // a whole record
		}
		msgs, err := decodePacked(batch[:n], make([]Message, 0, 4))
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%d of %d bytes: err %v, want ErrInvalid", n, len(batch), err)
		}
		if len(msgs) != 0 {
			t.Errorf("%d of %d bytes: %d messages returned with the error", n, len(batch), len(msgs))
		}
	}
}

// Each field of a record cut short within its body (the length prefix
// says less than the fields need) is an error naming the field.
func TestDecodePackedRejectsShortBodies(t *testing.T) {
	rec := appendRecord(nil, fullMessage())
	_, k := binary.Uvarint(rec)
	body := rec[k:]
	for n := 0; n < len(body); n++ {
		short := append(binary.AppendUvarint(nil, uint64(n)), body[:n]...)
		if _, err := decodePacked(short, nil); err == nil {
			t.Errorf("body cut to %d of %d bytes: decoded", n, len(body))
		}
	}
}

func TestDecodePackedRejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"length overflows", bytes.Repeat([]byte{0xff}, 11)},
		{"length beyond the batch", []byte{0x10, 0x00}},
		{"flags overflow", append([]byte{11}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"qos beyond uint32", append([]byte{7, 0}, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0)},
		{"topic beyond the body", []byte{4, 0, 0, 0, 9}},
		{"shared count beyond the body", []byte{9, flagShared, 0, 0, 0, 0, 0, 0, 0xff, 0x7f}},
		{"shared pair cut", []byte{10, flagShared, 0, 0, 0, 0, 0, 0, 1, 1, 'g'}},
		{"kick beyond the body", []byte{8, flagKick, 0, 0, 0, 0, 0, 0, 5}},
		{"to beyond the body", []byte{8, flagTo, 0, 0, 0, 0, 0, 0, 5}},
		{"expiry missing", []byte{7, flagExpires, 0, 0, 0, 0, 0, 0}},
	} {
		if _, err := decodePacked(tc.b, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tc.name, err)
		}
	}
}

func FuzzDecodePacked(f *testing.F) {
	for _, tc := range recordCases {
		f.Add(appendRecord(nil, tc.m))
	}
	f.Add(appendRecord(appendRecord(nil, fullMessage()), recordCases[2].m))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := decodePacked(b, nil)
		if err != nil {
			return
		}
		// What decodes encodes again to a batch that decodes the same.
		var again []byte
		for i := range msgs {
			again = appendRecord(again, msgs[i].Proto())
		}
		msgs2, err := decodePacked(again, nil)
		if err != nil || len(msgs2) != len(msgs) {
			t.Fatalf("re-encoded batch: %d messages, err %v", len(msgs2), err)
		}
		for i := range msgs {
			if !proto.Equal(msgs[i].Proto(), msgs2[i].Proto()) {
				t.Fatalf("message %d changed on re-encoding", i)
			}
		}
	})
}

// The codec's packed frame is the protobuf ForwardFrame it stands for.
func TestPackedBatchMarshal(t *testing.T) {
	recs := [][]byte{appendRecord(nil, fullMessage()), appendRecord(nil, recordCases[2].m)}
	for _, tc := range []struct{ seq, applied uint64 }{{1, 0}, {0, 0}, {math.MaxUint64, 12345}} {
		p := &packedBatch{seqFirst: tc.seq, applied: tc.applied, recs: recs}
		data, err := codec{}.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		out := &pb.ForwardFrame{}
		if err := (codec{}).Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
		data.Free()
		b := out.GetBatch()
		want := append(append([]byte(nil), recs[0]...), recs[1]...)
		if b == nil || b.SeqFirst != tc.seq || b.AppliedIndex != tc.applied || !bytes.Equal(b.Packed, want) || len(b.Messages) != 0 {
			t.Fatalf("seq %d applied %d: decoded %v", tc.seq, tc.applied, out)
		}
	}
}

// A receiver of an older version, which does not take packed batches,
// gets protobuf messages with every field; order and exactly-once hold as
// with packed batches.
func TestForwardToReceiverWithoutPacked(t *testing.T) {
	a := startNode(t, testConfig("a"), Handlers{})
	b := startNode(t, testConfig("b"), Handlers{})
	b.unpacked.Store(true)
	if err := a.SetPeer("b", b.addr); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	o := newOutcomes()
	for i := 1; i <= n; i++ {
		m := fullMessage()
		m.MsgId = uint64(i)
		a.Send("b", m, o.done(uint64(i)))
	}
	eventually(t, 20*time.Second, func() error {
		if c := o.count(); c != n {
			return fmt.Errorf("%d of %d done", c, n)
		}
		return nil
	})
	got := b.fd.from("a")
	if err := checkDelivered(got, n); err != nil {
		t.Fatal(err)
	}
	want := fullMessage()
	want.MsgId = 17
	if !proto.Equal(got[16], want) {
		t.Fatalf("delivered %v\nwant %v", got[16], want)
	}
	if b.legacyBatches.Load() == 0 || a.legacyBatches.Load() != 0 {
		t.Fatalf("batches of protobuf messages: %d received by b, %d by a; want some, none",
			b.legacyBatches.Load(), a.legacyBatches.Load())
	}
}

// The receiver reads a packed batch in place and leaves every other frame
// to protobuf, with the same result.
func TestRecvFrame(t *testing.T) {
	recs := [][]byte{appendRecord(nil, fullMessage()), appendRecord(nil, recordCases[2].m)}
	packed := append(append([]byte(nil), recs[0]...), recs[1]...)
	batch := func(b *pb.ForwardBatch) *pb.ForwardFrame {
		return &pb.ForwardFrame{Frame: &pb.ForwardFrame_Batch{Batch: b}}
	}
	withUnknown := batch(&pb.ForwardBatch{SeqFirst: 3, Packed: packed})
	withUnknown.GetBatch().ProtoReflect().SetUnknown([]byte{0x28, 0x01}) // field 5, varint 1
	for _, tc := range []struct {
		name    string
		in      any
		want    *pb.ForwardFrame
		inPlace bool
	}{
		{"packed", &packedBatch{seqFirst: 9, applied: 4, recs: recs},
			batch(&pb.ForwardBatch{SeqFirst: 9, AppliedIndex: 4, Packed: packed}), true},
		{"packed, no seq_first", &packedBatch{recs: recs}, batch(&pb.ForwardBatch{Packed: packed}), true},
		{"protobuf messages", batch(&pb.ForwardBatch{SeqFirst: 1, Messages: []*pb.ForwardedMessage{fullMessage()}}),
			batch(&pb.ForwardBatch{SeqFirst: 1, Messages: []*pb.ForwardedMessage{fullMessage()}}), false},
		{"a field of a later version", withUnknown, withUnknown, false},
		{"heartbeat", &pb.ForwardFrame{Frame: &pb.ForwardFrame_Heartbeat{Heartbeat: &pb.ForwardHeartbeat{AppliedIndex: 8}}},
			&pb.ForwardFrame{Frame: &pb.ForwardFrame_Heartbeat{Heartbeat: &pb.ForwardHeartbeat{AppliedIndex: 8}}}, false},
		{"hello", &pb.ForwardFrame{Frame: &pb.ForwardFrame_Hello{Hello: &pb.ForwardHello{Epoch: 5}}},
			&pb.ForwardFrame{Frame: &pb.ForwardFrame_Hello{Hello: &pb.ForwardHello{Epoch: 5}}}, false},
	} {
		data, err := codec{}.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		f := &recvFrame{}
		if err := (codec{}).Unmarshal(data, f); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		data.Free()
		if !proto.Equal(f.frame, tc.want) {
			t.Errorf("%s: got %v\nwant %v", tc.name, f.frame, tc.want)
		}
		if (f.buf != nil) != tc.inPlace {
			t.Errorf("%s: read in place %v, want %v", tc.name, f.buf != nil, tc.inPlace)
		}
		f.free()
	}
	// Junk is an error, not a panic.
	for _, junk := range [][]byte{{0x12, 0x05, 0x22}, {0x12, 0x02, 0x22, 0x09}, {0xff}} {
		f := &recvFrame{}
		if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(junk)}, f); err == nil {
			t.Errorf("% x: decoded as %v", junk, f.frame)
		}
		f.free()
	}
}
