package transport

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

func TestDirtyPoolClasses(t *testing.T) {
	for _, tc := range []struct{ size, class int }{
		{0, 0}, {1, 0}, {256, 0}, {257, 1}, {512, 1}, {4096, 4}, {4097, 5}, {4 << 20, 14}, {4<<20 + 1, -1},
	} {
		if got := class(tc.size); got != tc.class {
			t.Errorf("class(%d) = %d, want %d", tc.size, got, tc.class)
		}
	}
	p := newDirtyPool()
	b := p.Get(1000)
	if len(*b) != 1000 || cap(*b) != 1024 {
		t.Fatalf("Get(1000): len %d cap %d, want 1000 and 1024", len(*b), cap(*b))
	}
	p.Put(b)
	big := p.Get(5 << 20)
	if len(*big) != 5<<20 {
		t.Fatalf("Get of an unpooled size: len %d", len(*big))
	}
	p.Put(big) // dropped, not kept
}

// A batch survives the codec unchanged, also when its buffer is reused.
func TestCodecRoundTrip(t *testing.T) {
	in := &pb.ForwardFrame{Frame: &pb.ForwardFrame_Batch{Batch: &pb.ForwardBatch{SeqFirst: 7, Messages: []*pb.ForwardedMessage{
		{MsgId: 1, Topic: "a/b", Payload: []byte("hello"), Qos: 1, OriginNode: "n0"},
		{MsgId: 2, Topic: "a/c", Payload: make([]byte, 3000), Shared: []*pb.SharedTarget{{Group: "g", Filter: "a/#"}}},
	}}}}
	for range 3 {
		data, err := codec{}.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out := &pb.ForwardFrame{}
		if err := (codec{}).Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
		data.Free()
		if !proto.Equal(in, out) {
			t.Fatalf("round trip changed the frame:\n%v\n%v", in, out)
		}
	}
}
