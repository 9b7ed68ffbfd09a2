package packet

import (
	"errors"
	"io"
	"runtime"
	"testing"
)

func TestParseFixedHeaderRemainingLengths(t *testing.T) {
	for _, rem := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxRemainingLength} {
		hdr := appendHeader(nil, PUBLISH, 0, rem)
		if want := 1 + len(vbi(rem)); len(hdr) != want {
			t.Errorf("remaining %d: header of %d bytes, want %d", rem, len(hdr), want)
		}
		fh, n, err := ParseFixedHeader(hdr, 0)
		if err != nil || n != len(hdr) || fh.Remaining != rem || fh.Type != PUBLISH {
			t.Errorf("remaining %d: got %+v, %d, %v", rem, fh, n, err)
		}
		// Every proper prefix needs more.
		for i := 0; i < len(hdr); i++ {
			if _, _, err := ParseFixedHeader(hdr[:i], 0); err != ErrNeedMore {
				t.Errorf("remaining %d, %d header bytes: %v, want ErrNeedMore", rem, i, err)
			}
		}
	}
}

func TestParseFixedHeaderErrors(t *testing.T) {
	for _, c := range []struct {
		desc string
		b    []byte
		max  int
		code ReasonCode
	}{
		{"fifth length byte [MQTT-1.5.5-1]", bs(0x30, 0x80, 0x80, 0x80, 0x80), 0, MalformedPacket},
		{"fifth length byte without a sixth", bs(0x30, 0xFF, 0xFF, 0xFF, 0xFF), 0, MalformedPacket},
		{"0 in two bytes", bs(0x30, 0x80, 0x00), 0, MalformedPacket},
		{"127 in two bytes", bs(0x30, 0xFF, 0x00), 0, MalformedPacket},
		{"reserved type 0", bs(0x00, 0x00), 0, MalformedPacket},
		{"PUBLISH QoS 3 [MQTT-3.3.1-4]", bs(0x36, 0x00), 0, MalformedPacket},
		{"CONNECT flags 0001", bs(0x11, 0x00), 0, MalformedPacket},
		{"PUBREL flags 0000 [MQTT-3.6.1-1]", bs(0x60, 0x02), 0, MalformedPacket},
		{"whole packet one byte over the maximum", bs(0x30, 0x0A), 11, PacketTooLarge},
	} {
		_, _, err := ParseFixedHeader(c.b, c.max)
		var e *Error
		if !errors.As(err, &e) || e.Code != c.code {
			t.Errorf("%s: got %v, want code 0x%02X", c.desc, err, byte(c.code))
		}
	}
	if _, _, err := ParseFixedHeader(bs(0x30, 0x0A), 12); err != nil {
		t.Errorf("packet of exactly the maximum size: %v", err)
	}
}

// TestHeaderRefusesHugePacket is BAD-INPUT row 2: a Remaining Length of
// 256 MB against a 1 MiB maximum is refused from the five header bytes
// alone, with no body and next to no memory.
func TestHeaderRefusesHugePacket(t *testing.T) {
	hdr := bs(0x30, 0xFF, 0xFF, 0xFF, 0x7F) // 268,435,455
	_, n, err := ParseFixedHeader(hdr, 1<<20)
	if !errors.Is(err, ErrTooLarge) || n != 5 {
		t.Fatalf("got n=%d, %v; want PacketTooLarge after 5 bytes", n, err)
	}
	if grew := leastAllocated(func() { ParseFixedHeader(hdr, 1<<20) }); grew > 4096 {
		t.Errorf("refusing the header allocated %d bytes", grew)
	}
}

// TestManyUserProperties is BAD-INPUT row 19: a PUBLISH with 100,000 user
// properties is over a 1 MiB limit and refused by the header check, and
// under no limit it decodes in one bounded pass.
func TestManyUserProperties(t *testing.T) {
	const count = 100000
	var ps [][]byte
	for range count {
		ps = append(ps, pUser("key", "value"))
	}
	raw := frame(0x30, lstr("a"), props(ps...), []byte("x"))
	if len(raw) <= 1<<20 {
		t.Fatalf("test packet of %d bytes is not over the limit", len(raw))
	}
	_, n, err := ParseFixedHeader(raw[:5], 1<<20)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("header check: %v, want PacketTooLarge", err)
	}

	// The Reader refuses it having read no more than its small buffer.
	src := &countingReader{data: raw}
	rd := NewReader(src, 1<<20)
	rd.SetVersion(V5)
	if _, err := rd.ReadPacket(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Reader: %v, want PacketTooLarge", err)
	}
	if src.read > 8 {
		t.Errorf("Reader consumed %d bytes of a refused packet", src.read)
	}

	fh, n, err := ParseFixedHeader(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(fh, raw[n:], V5)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.(*Publish).Properties.UserProperties); got != count {
		t.Fatalf("decoded %d user properties, want %d", got, count)
	}
	if c := cap(p.(*Publish).Properties.UserProperties); c != count {
		t.Errorf("user property slice has capacity %d, want exactly %d", c, count)
	}
}

type countingReader struct {
	data []byte
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read == len(c.data) {
		return 0, io.EOF
	}
	n := copy(p, c.data[c.read:])
	c.read += n
	return n, nil
}

// leastAllocated is the least number of bytes the process allocated over
// five runs of fn: other goroutines of the test binary (the race detector,
// the garbage collector) allocate too, so one run can count theirs.
func leastAllocated(fn func()) uint64 {
	least := uint64(1 << 62)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}
