package packet

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"
)

// decodeRaw runs raw through ParseFixedHeader and Decode the way a server
// does, with the fixture limits.
func decodeRaw(raw []byte, v Version) (Packet, error) {
	fh, n, err := ParseFixedHeader(raw, fixtureLimits().MaxPacketSize)
	if err != nil {
		return nil, err
	}
	if n+fh.Remaining != len(raw) {
		return nil, fmt.Errorf("test fixture: header announces %d bytes, raw has %d", n+fh.Remaining, len(raw))
	}
	return Decode(fh, raw[n:], v)
}

// judge is what a server concludes from raw: the first error of the fixed
// header, Decode and Validate (for packets from clients).
func judge(f fixture) (Packet, error) {
	p, err := decodeRaw(f.raw, f.v)
	if err != nil {
		return nil, err
	}
	if f.code != 0 || (!f.server && clientSent(p.Type())) {
		if err := Validate(p, f.v, fixtureLimits()); err != nil {
			return p, err
		}
	}
	return p, nil
}

func TestFixturesDecode(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.desc, func(t *testing.T) {
			p, err := judge(f)
			if f.code != 0 {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("got %v (%T), want an *Error with code 0x%02X", err, err, byte(f.code))
				}
				if e.Code != f.code {
					t.Fatalf("got code 0x%02X (%v), want 0x%02X", byte(e.Code), err, byte(f.code))
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if d := diff(p, f.pkt); d != "" {
				t.Fatalf("decoded packet differs:%s", d)
			}
			if f.suback != nil {
				s := p.(*Subscribe)
				for i, sub := range s.Subscriptions {
					if got := FilterCode(sub, f.v, fixtureLimits()); got != f.suback[i] {
						t.Errorf("FilterCode(%.40q) = 0x%02X, want 0x%02X", sub.Filter, byte(got), byte(f.suback[i]))
					}
				}
			}
		})
	}
}

func TestFixturesEncode(t *testing.T) {
	for _, f := range fixtures {
		if f.code != 0 || f.decodeOnly {
			continue
		}
		t.Run(f.desc, func(t *testing.T) {
			got, err := Append(nil, f.pkt, f.v)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.Equal(got, f.raw) {
				t.Fatalf("Append:\n got % x\nwant % x", trim(got), trim(f.raw))
			}
			n, err := Size(f.pkt, f.v)
			if err != nil || n != len(f.raw) {
				t.Fatalf("Size = %d, %v; want %d", n, err, len(f.raw))
			}
			// Appending after existing bytes into a buffer with room
			// allocates nothing and leaves the prefix alone.
			buf := make([]byte, 3, 3+len(f.raw))
			copy(buf, "pre")
			allocs := testing.AllocsPerRun(20, func() {
				buf, _ = f.pkt.Append(buf[:3], f.v)
			})
			if allocs != 0 {
				t.Errorf("Append into a buffer with capacity: %v allocations, want 0", allocs)
			}
			if string(buf[:3]) != "pre" || !bytes.Equal(buf[3:], f.raw) {
				t.Errorf("Append after a prefix wrote % x", trim(buf))
			}
		})
	}
}

func trim(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// TestDecodeKeepsNoInput overwrites the input after decoding: the decoded
// packets must not change.
func TestDecodeKeepsNoInput(t *testing.T) {
	for _, f := range fixtures {
		if f.code != 0 {
			continue
		}
		raw := bytes.Clone(f.raw)
		p, err := decodeRaw(raw, f.v)
		if err != nil {
			t.Fatalf("%s: %v", f.desc, err)
		}
		for i := range raw {
			raw[i] = 0xA5
		}
		if d := diff(p, f.pkt); d != "" {
			t.Errorf("%s: packet changed with its input:%s", f.desc, d)
		}
	}
}

// TestFixturesCoverage holds the table to its promise: every packet type in
// 3.1.1 and 5.0, every property, and the BAD-INPUT rows a codec can decide.
func TestFixturesCoverage(t *testing.T) {
	types := map[Version]map[Type]bool{V311: {}, V5: {}, V31: {}}
	propSeen := map[PropID]bool{}
	note := func(p *Properties) {
		for id := PropID(1); id <= maxPropID; id++ {
			if p.Has(id) {
				propSeen[id] = true
			}
		}
	}
	rows := map[int]bool{}
	re := regexp.MustCompile(`^BAD-INPUT row (\d+):`)
	for _, f := range fixtures {
		if m := re.FindStringSubmatch(f.desc); m != nil {
			n, _ := strconv.Atoi(m[1])
			rows[n] = true
		}
		if f.code != 0 {
			continue
		}
		types[f.v][f.pkt.Type()] = true
		switch p := f.pkt.(type) {
		case *Connect:
			note(&p.Properties)
			if p.Will != nil {
				note(&p.Will.Properties)
			}
		case *Connack:
			note(&p.Properties)
		case *Publish:
			note(&p.Properties)
		case *Ack:
			note(&p.Properties)
		case *Subscribe:
			note(&p.Properties)
		case *Suback:
			note(&p.Properties)
		case *Unsubscribe:
			note(&p.Properties)
		case *Unsuback:
			note(&p.Properties)
		case *Disconnect:
			note(&p.Properties)
		case *Auth:
			note(&p.Properties)
		}
	}
	for typ := CONNECT; typ <= AUTH; typ++ {
		if !types[V5][typ] {
			t.Errorf("no 5.0 success row for %v", typ)
		}
		if typ != AUTH && !types[V311][typ] {
			t.Errorf("no 3.1.1 success row for %v", typ)
		}
	}
	if !types[V31][CONNECT] {
		t.Error("no 3.1 CONNECT row")
	}
	for id := PropID(1); id <= maxPropID; id++ {
		if kindOf(id) != kindUnknown && !propSeen[id] {
			t.Errorf("property 0x%02X appears in no success row", byte(id))
		}
	}
	for _, n := range []int{1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 23} {
		if !rows[n] {
			t.Errorf("no fixture for BAD-INPUT row %d", n)
		}
	}
}
