package packet

import (
	"errors"
	"fmt"
)

// MaxRemainingLength is the largest Remaining Length a four-byte Variable
// Byte Integer can carry (MQTT 3.1.1 section 2.2.3, 5.0 section 1.5.5).
const MaxRemainingLength = 268435455

// ErrNeedMore is returned by ParseFixedHeader when b does not yet hold a
// complete fixed header. It is not an *Error: nothing is wrong with the input
// yet, the caller reads more and tries again.
var ErrNeedMore = errors.New("packet: incomplete fixed header")

// FixedHeader is the first two to five bytes of every control packet: the
// packet type, the four flag bits and the Remaining Length (the number of
// bytes of the packet that follow the fixed header).
type FixedHeader struct {
	Type      Type
	Flags     byte
	Remaining int
}

// ParseFixedHeader reads the fixed header at the start of b; n is its length
// in bytes (2 to 5).
//
// It returns ErrNeedMore when b holds no complete fixed header yet. A
// Remaining Length with a fifth byte, or one that is not minimally encoded
// [MQTT-1.5.5-1], is malformed; so are reserved packet type 0 and fixed-header
// flags other than those the packet type requires ([MQTT-2.2.2-1] in 3.1.1,
// [MQTT-2.1.3-1] in 5.0; PUBLISH QoS 3 [MQTT-3.3.1-4]). When maxPacketSize > 0
// and the whole packet (Remaining + n) would exceed it, the result is an *Error
// with PacketTooLarge, decided from the header alone before any body exists.
// Type 15 is accepted here because it is AUTH in 5.0; Decode refuses it in
// 3.1 and 3.1.1.
func ParseFixedHeader(b []byte, maxPacketSize int) (fh FixedHeader, n int, err error) {
	if len(b) < 2 {
		return FixedHeader{}, 0, ErrNeedMore
	}
	rem, k, err := parseVarint(b[1:], true)
	if err != nil {
		return FixedHeader{}, 0, err
	}
	fh = FixedHeader{Type: Type(b[0] >> 4), Flags: b[0] & 0x0F, Remaining: rem}
	n = 1 + k
	if err := checkFlags(fh.Type, fh.Flags); err != nil {
		return fh, n, err
	}
	if maxPacketSize > 0 && rem+n > maxPacketSize {
		return fh, n, &Error{Code: PacketTooLarge,
			Reason: fmt.Sprintf("packet of %d bytes exceeds the maximum packet size of %d", rem+n, maxPacketSize)}
	}
	return fh, n, nil
}

// parseVarint reads a Variable Byte Integer of at most four bytes from the
// start of b. When b ends before the integer does, it returns ErrNeedMore if
// more may arrive (stream), else a malformed-packet error. A non-minimal
// encoding (a last byte of 0 after a continuation) is malformed
// [MQTT-1.5.5-1].
func parseVarint(b []byte, stream bool) (v, n int, err error) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			if stream {
				return 0, 0, ErrNeedMore
			}
			return 0, 0, malformed("truncated variable byte integer")
		}
		c := b[i]
		v |= int(c&0x7F) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, 0, malformed("variable byte integer not minimally encoded [MQTT-1.5.5-1]")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, malformed("variable byte integer longer than four bytes")
}

// varintLen is the encoded length of v as a Variable Byte Integer.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

// appendVarint appends v (0..MaxRemainingLength) as a minimal Variable Byte
// Integer.
func appendVarint(dst []byte, v int) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v == 0 {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}

// checkFlags applies the fixed-header flag rules of every packet type
// ([MQTT-2.2.2-1] in 3.1.1, [MQTT-2.1.3-1] in 5.0): PUBREL, SUBSCRIBE and
// UNSUBSCRIBE carry 0010 ([MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]),
// PUBLISH carries DUP, QoS and RETAIN with QoS 3 forbidden [MQTT-3.3.1-4], all
// others 0000. Type 0 is reserved.
func checkFlags(t Type, flags byte) error {
	switch t {
	case Reserved:
		return malformed("reserved packet type 0")
	case PUBLISH:
		if flags&0x06 == 0x06 {
			return malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
		}
		return nil
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		if flags != 0x02 {
			return malformed(t.String() + " fixed header flags are not 0010")
		}
		return nil
	}
	if flags != 0 {
		return malformed(t.String() + " fixed header flags are not 0000")
	}
	return nil
}

// appendHeader appends a fixed header: type and flags, then the Remaining
// Length.
func appendHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags)
	return appendVarint(dst, remaining)
}
