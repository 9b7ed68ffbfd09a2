package packet

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// The seed corpora of these targets are generated from the fixture table
// (seeds_test.go) and committed under testdata/fuzz/<FuzzName>/, together
// with any input a fuzzing run found failing, kept as a regression.

// fuzzVersion maps a fuzz byte to a protocol version.
func fuzzVersion(b byte) Version { return Version(3 + b%3) }

// mustBeCodecError fails unless err is an *Error, the only kind of error a
// decoder returns.
func mustBeCodecError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is a %T, not an *Error", err, err)
	}
}

func FuzzParseFixedHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, max uint32) {
		maxSize := int(max % (MaxRemainingLength + 6))
		fh, n, err := ParseFixedHeader(b, maxSize)
		incomplete := len(b) < 2
		if !incomplete && len(b) < 5 {
			incomplete = true
			for _, c := range b[1:] {
				if c < 0x80 {
					incomplete = false
				}
			}
		}
		if incomplete != (err == ErrNeedMore) {
			t.Fatalf("% x: err %v, incomplete %v", b, err, incomplete)
		}
		if err != nil {
			if err != ErrNeedMore {
				mustBeCodecError(t, err)
			}
			return
		}
		if n < 2 || n > 5 || n > len(b) || fh.Remaining > MaxRemainingLength {
			t.Fatalf("% x: n=%d fh=%+v", b, n, fh)
		}
		if maxSize > 0 && fh.Remaining+n > maxSize {
			t.Fatalf("% x: %d bytes accepted under a maximum of %d", b, fh.Remaining+n, maxSize)
		}
		if re := appendHeader(nil, fh.Type, fh.Flags, fh.Remaining); !bytes.Equal(re, b[:n]) {
			t.Fatalf("% x: header re-encodes as % x", b[:n], re)
		}
	})
}

// roundTrip encodes a decoded packet and decodes it again: the result must
// be equal, and the size must be what Size says.
func roundTrip(t *testing.T, p Packet, v Version) {
	t.Helper()
	if c, ok := p.(*Connect); ok {
		v = c.Version
	}
	raw, err := Append(nil, p, v)
	if err != nil {
		t.Fatalf("a decoded packet does not encode: %v\n%s", err, show(p))
	}
	if n, err := Size(p, v); err != nil || n != len(raw) {
		t.Fatalf("Size = %d, %v; Append wrote %d", n, err, len(raw))
	}
	fh, n, err := ParseFixedHeader(raw, 0)
	if err != nil || n+fh.Remaining != len(raw) {
		t.Fatalf("re-encoded header: %+v %d %v", fh, n, err)
	}
	p2, err := Decode(fh, raw[n:], v)
	if err != nil {
		t.Fatalf("re-encoded packet does not decode: %v\n% x", err, trim(raw))
	}
	if d := diff(p2, p); d != "" {
		t.Fatalf("round trip changed the packet:%s", d)
	}
}

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, hdr byte, ver byte, body []byte) {
		v := fuzzVersion(ver)
		fh := FixedHeader{Type: Type(hdr >> 4), Flags: hdr & 0x0F, Remaining: len(body)}
		in := bytes.Clone(body)
		p, err := Decode(fh, in, v)
		if err != nil {
			mustBeCodecError(t, err)
			return
		}
		before, err := Append(nil, p, encodeVersion(p, v))
		if err != nil {
			t.Fatalf("a decoded packet does not encode: %v", err)
		}
		for i := range in {
			in[i] ^= 0xFF
		}
		after, _ := Append(nil, p, encodeVersion(p, v))
		if !bytes.Equal(before, after) {
			t.Fatal("the decoded packet changed with the input buffer")
		}
		roundTrip(t, p, v)
	})
}

func encodeVersion(p Packet, v Version) Version {
	if c, ok := p.(*Connect); ok {
		return c.Version
	}
	return v
}

func FuzzDecodePublish(f *testing.F) {
	f.Fuzz(func(t *testing.T, flags byte, ver byte, body []byte) {
		v := fuzzVersion(ver)
		in := bytes.Clone(body)
		var p Publish
		err := DecodePublish(&p, flags, in, v)
		if err != nil {
			mustBeCodecError(t, err)
			return
		}
		// Decoding again into the same, reused Publish gives the same
		// packet: nothing of the previous one leaks into the next.
		var fresh Publish
		if err := DecodePublish(&fresh, flags, body, v); err != nil {
			t.Fatal(err)
		}
		if err := DecodePublish(&p, flags, body, v); err != nil {
			t.Fatal(err)
		}
		if d := diff(&p, &fresh); d != "" {
			t.Fatalf("reused Publish differs:%s", d)
		}
		before, err := Append(nil, &p, v)
		if err != nil {
			t.Fatalf("a decoded PUBLISH does not encode: %v", err)
		}
		for i := range body {
			body[i] ^= 0xFF
		}
		if after, _ := Append(nil, &p, v); !bytes.Equal(before, after) {
			t.Fatal("the decoded PUBLISH changed with the input buffer")
		}
		roundTrip(t, &p, v)
	})
}

// readerRow is a fixture row as a Reader of one version must see it: the
// packet or the error code that ParseFixedHeader and Decode give.
type readerRow struct {
	raw  []byte
	pkt  Packet
	code ReasonCode
}

func readerRows(v Version) []readerRow {
	var rows []readerRow
	for _, f := range fixtures {
		if f.v != v && !(len(f.raw) > 0 && f.raw[0]>>4 == byte(CONNECT)) {
			continue
		}
		p, err := decodeRaw(f.raw, v)
		var e *Error
		switch {
		case err == nil:
			rows = append(rows, readerRow{raw: f.raw, pkt: p})
		case errors.As(err, &e):
			rows = append(rows, readerRow{raw: f.raw, code: e.Code})
		}
	}
	return rows
}

// FuzzReader feeds the Reader a stream of fixture rows chosen by picks, in
// chunks whose sizes come from chunks. Every packet up to the first bad row
// must come out as ParseFixedHeader and Decode give it, the bad row must fail
// with the same code, and a stream of good rows must end in io.EOF.
func FuzzReader(f *testing.F) {
	rows := map[Version][]readerRow{V311: readerRows(V311), V5: readerRows(V5)}
	f.Fuzz(func(t *testing.T, ver byte, picks []byte, chunks []byte) {
		v := V311
		if ver&1 == 1 {
			v = V5
		}
		table := rows[v]
		if len(picks) > 64 {
			picks = picks[:64]
		}
		var stream []byte
		for _, i := range picks {
			stream = append(stream, table[int(i)%len(table)].raw...)
		}
		sizes := make([]int, len(chunks))
		for i, c := range chunks {
			sizes[i] = int(c) + 1
			if c == 0xFF {
				sizes[i] = 5000
			}
		}
		src := &chunkReader{data: stream, sizes: sizes, eofHot: ver&2 != 0}
		r := NewReader(src, fixtureLimits().MaxPacketSize)
		r.SetVersion(v)
		defer r.Release()
		for _, i := range picks {
			want := table[int(i)%len(table)]
			p, err := r.ReadPacket()
			if want.code != 0 {
				var e *Error
				if !errors.As(err, &e) || e.Code != want.code {
					t.Fatalf("bad row % x: got %v, want code 0x%02X", trim(want.raw), err, byte(want.code))
				}
				return
			}
			if err != nil {
				t.Fatalf("row % x: %v", trim(want.raw), err)
			}
			if d := diff(p, want.pkt); d != "" {
				t.Fatalf("row % x:%s", trim(want.raw), d)
			}
		}
		if _, err := r.ReadPacket(); err != io.EOF {
			t.Fatalf("after the last row: %v, want io.EOF", err)
		}
	})
}
