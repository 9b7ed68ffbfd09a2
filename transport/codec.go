package transport

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// codec is the transport's gRPC codec: protobuf, with buffers from
// bufPool. gRPC's default pool zeroes every buffer it hands out; for the
// forwarding batches that costs about as much as the copy into them, and
// the marshaller overwrites every byte anyway.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*packedBatch); ok {
		return p.marshal(), nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("transport codec: %T is not a protobuf message", v)
	}
	size := proto.Size(m)
	buf := bufPool.Get(size)
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		bufPool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, bufPool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*recvFrame); ok {
		return f.unmarshal(data)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("transport codec: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(bufPool)
	defer buf.Free()
	// Unmarshal copies what it keeps: the buffer goes back to the pool.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// packedBatch is a ForwardFrame holding a ForwardBatch with packed
// messages, which the codec encodes by copying the outbox's records into
// the gRPC buffer one after the other: no protobuf message per PUBLISH.
type packedBatch struct {
	seqFirst uint64
	applied  uint64
	recs     [][]byte // records in the packed layout (message.go)
}

// marshal encodes p as the protobuf ForwardFrame{batch: ForwardBatch{
// seq_first, applied_index, packed}}.
func (p *packedBatch) marshal() mem.BufferSlice {
	packed := 0
	for _, r := range p.recs {
		packed += len(r)
	}
	batch := protowire.SizeTag(4) + protowire.SizeBytes(packed)
	if p.seqFirst != 0 {
		batch += protowire.SizeTag(1) + protowire.SizeVarint(p.seqFirst)
	}
	if p.applied != 0 {
		batch += protowire.SizeTag(3) + protowire.SizeVarint(p.applied)
	}
	size := protowire.SizeTag(2) + protowire.SizeBytes(batch)
	buf := bufPool.Get(size)
	b := (*buf)[:0]
	b = protowire.AppendTag(b, 2, protowire.BytesType) // ForwardFrame.batch
	b = protowire.AppendVarint(b, uint64(batch))
	if p.seqFirst != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType) // ForwardBatch.seq_first
		b = protowire.AppendVarint(b, p.seqFirst)
	}
	if p.applied != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType) // ForwardBatch.applied_index
		b = protowire.AppendVarint(b, p.applied)
	}
	b = protowire.AppendTag(b, 4, protowire.BytesType) // ForwardBatch.packed
	b = protowire.AppendVarint(b, uint64(packed))
	for _, r := range p.recs {
		b = append(b, r...)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, bufPool)}
}

// recvFrame is a ForwardFrame as the receiver reads it. A batch of packed
// messages stays in the buffer it arrived in, which the frame holds until
// free: the messages are views of it (Message), never copied.
type recvFrame struct {
	frame *pb.ForwardFrame
	buf   mem.Buffer // holds frame's packed messages; nil if nothing is held
}

func (f *recvFrame) free() {
	if f.buf != nil {
		f.buf.Free()
		f.buf = nil
	}
}

func (f *recvFrame) unmarshal(data mem.BufferSlice) error {
	buf := data.MaterializeToBuffer(bufPool)
	if batch, ok := parsePackedBatch(buf.ReadOnlyData()); ok {
		f.frame = &pb.ForwardFrame{Frame: &pb.ForwardFrame_Batch{Batch: batch}}
		f.buf = buf
		return nil
	}
	defer buf.Free()
	f.frame = &pb.ForwardFrame{}
	return proto.Unmarshal(buf.ReadOnlyData(), f.frame)
}

// parsePackedBatch decodes b if it is what packedBatch.marshal writes: a
// ForwardFrame holding a ForwardBatch with seq_first, applied_index and
// packed, each at most once, and nothing else. packed is a view of b.
// Anything else (another frame, protobuf messages, fields of a later
// version) is left to protobuf.
func parsePackedBatch(b []byte) (*pb.ForwardBatch, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 2 || typ != protowire.BytesType {
		return nil, false
	}
	body, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, false
	}
	batch := &pb.ForwardBatch{}
	var seen uint
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 || num > 4 || seen&(1<<num) != 0 {
			return nil, false
		}
		seen |= 1 << num
		body = body[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			batch.SeqFirst, n = protowire.ConsumeVarint(body)
		case num == 3 && typ == protowire.VarintType:
			batch.AppliedIndex, n = protowire.ConsumeVarint(body)
		case num == 4 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(body)
			batch.Packed = v[:len(v):len(v)]
		default:
			return nil, false
		}
		if n < 0 {
			return nil, false
		}
		body = body[n:]
	}
	return batch, seen&(1<<4) != 0
}

// bufPool hands out buffers in power-of-two classes from 256 B to 4 MiB
// (larger ones are not pooled) without clearing them: their users write
// before they read.
var bufPool = newDirtyPool()

const (
	minPoolShift = 8
	maxPoolShift = 22
)

type dirtyPool struct {
	classes [maxPoolShift - minPoolShift + 1]sync.Pool
}

func newDirtyPool() *dirtyPool { return &dirtyPool{} }

// class is the index of the smallest class holding size bytes, or -1.
func class(size int) int {
	if size <= 1<<minPoolShift {
		return 0
	}
	c := bits.Len(uint(size-1)) - minPoolShift
	if c > maxPoolShift-minPoolShift {
		return -1
	}
	return c
}

func (p *dirtyPool) Get(size int) *[]byte {
	c := class(size)
	if c < 0 {
		b := make([]byte, size)
		return &b
	}
	if bp, ok := p.classes[c].Get().(*[]byte); ok {
		*bp = (*bp)[:size]
		return bp
	}
	b := make([]byte, size, 1<<(c+minPoolShift))
	return &b
}

func (p *dirtyPool) Put(bp *[]byte) {
	n := cap(*bp)
	c := class(n)
	if c < 0 || n != 1<<(c+minPoolShift) {
		return // not one of ours, or grown past its class
	}
	p.classes[c].Put(bp)
}
