package packet

import (
	"bytes"
	"testing"
)

// benchPublish is a QoS 1 PUBLISH of exactly 64 bytes, fixed header
// included: an 18-byte topic and a payload that fills the rest.
func benchPublish(v Version) (*Publish, []byte) {
	p := &Publish{QoS: 1, PacketID: 42, Topic: "sensors/room1/temp"}
	payload := 40
	if v == V5 {
		payload = 39 // one byte of Property Length
	}
	p.Payload = bytes.Repeat([]byte("x"), payload)
	raw, err := Append(nil, p, v)
	if err != nil || len(raw) != 64 {
		panic("benchmark PUBLISH is not 64 bytes")
	}
	return p, raw
}

func benchDecodePublish(b *testing.B, v Version) {
	_, raw := benchPublish(v)
	fh, n, err := ParseFixedHeader(raw, 0)
	if err != nil {
		b.Fatal(err)
	}
	body := raw[n:]
	var p Publish
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodePublish(&p, fh.Flags, body, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePublish64V311(b *testing.B) { benchDecodePublish(b, V311) }
func BenchmarkDecodePublish64V5(b *testing.B)   { benchDecodePublish(b, V5) }

func benchAppendPublish(b *testing.B, v Version) {
	p, raw := benchPublish(v)
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = p.Append(buf[:0], v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPublish64V311(b *testing.B) { benchAppendPublish(b, V311) }
func BenchmarkAppendPublish64V5(b *testing.B)   { benchAppendPublish(b, V5) }

// loopReader replays a stream of whole packets forever.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// BenchmarkReaderPublish64 reads back-to-back 64-byte QoS 1 PUBLISH packets
// through a Reader: one op is one packet.
func benchReader(b *testing.B, v Version) {
	_, raw := benchPublish(v)
	r := NewReader(&loopReader{data: bytes.Repeat(raw, 1024)}, 1<<20)
	r.SetVersion(v)
	defer r.Release()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadPacket(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaderPublish64V311(b *testing.B) { benchReader(b, V311) }
func BenchmarkReaderPublish64V5(b *testing.B)   { benchReader(b, V5) }

// BenchmarkDecodeConnectV5 decodes the 5.0 CONNECT with every property.
func BenchmarkDecodeConnectV5(b *testing.B) {
	var raw []byte
	for _, f := range fixtures {
		if f.desc == "5.0 CONNECT with every CONNECT property and every will property" {
			raw = f.raw
		}
	}
	fh, n, err := ParseFixedHeader(raw, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(fh, raw[n:], 0); err != nil {
			b.Fatal(err)
		}
	}
}
