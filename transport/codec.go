package transport

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codec is the transport's gRPC codec: protobuf, with buffers from
// bufPool. gRPC's default pool zeroes every buffer it hands out; for the
// forwarding batches that costs about as much as the copy into them, and
// the marshaller overwrites every byte anyway.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
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
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("transport codec: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(bufPool)
	defer buf.Free()
	// Unmarshal copies what it keeps: the buffer goes back to the pool.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
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
