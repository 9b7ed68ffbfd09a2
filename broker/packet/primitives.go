package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// ErrUnencodable is wrapped by Append when a packet cannot be represented on
// the wire: a string or binary field longer than 65,535 bytes, a Remaining
// Length past MaxRemainingLength, an unknown protocol version, or a packet
// type the version does not have (AUTH before 5.0).
var ErrUnencodable = errors.New("packet: cannot be encoded")

// maxString is the longest UTF-8 string or binary field: a two-byte length.
const maxString = 65535

// rd reads the body of one packet. Every read checks the bounds and fails
// with a malformed-packet error naming the field, so a decoder never reads
// past the packet.
type rd struct {
	b   []byte
	off int
}

func (r *rd) left() int { return len(r.b) - r.off }

func (r *rd) u8(what string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, truncated(what)
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *rd) u16(what string) (uint16, error) {
	if r.left() < 2 {
		return 0, truncated(what)
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, nil
}

func (r *rd) u32(what string) (uint32, error) {
	if r.left() < 4 {
		return 0, truncated(what)
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *rd) varint(what string) (int, error) {
	v, n, err := parseVarint(r.b[r.off:], false)
	if err != nil {
		return 0, malformed(what + ": " + err.(*Error).Reason)
	}
	r.off += n
	return v, nil
}

// binary reads two-byte-length-prefixed Binary Data and returns it as a
// sub-slice of the body (the caller copies what it keeps).
func (r *rd) binary(what string) ([]byte, error) {
	n, err := r.u16(what)
	if err != nil {
		return nil, err
	}
	if int(n) > r.left() {
		return nil, malformed(what + " length past the end of the packet")
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

// text reads a UTF-8 Encoded String and checks it: well-formed UTF-8 (no
// surrogates, overlong forms or code points past U+10FFFF) and no U+0000
// ([MQTT-1.5.3-1], [MQTT-1.5.3-2] in 3.1.1; [MQTT-1.5.4-1], [MQTT-1.5.4-2] in
// 5.0). U+FEFF is kept as is [MQTT-1.5.3-3].
func (r *rd) text(what string) ([]byte, error) {
	b, err := r.binary(what)
	if err != nil {
		return nil, err
	}
	if !validUTF8(b) {
		return nil, malformed(what + " is not a valid UTF-8 string [MQTT-1.5.4-1]")
	}
	return b, nil
}

// validUTF8 reports whether b is well-formed UTF-8 without U+0000. ASCII is
// checked a byte at a time; the first non-ASCII byte hands the rest to
// utf8.Valid, which rejects surrogates, overlong forms and values past
// U+10FFFF.
func validUTF8(b []byte) bool {
	for i, c := range b {
		if c == 0 {
			return false
		}
		if c >= utf8.RuneSelf {
			rest := b[i:]
			return utf8.Valid(rest) && bytes.IndexByte(rest, 0) < 0
		}
	}
	return true
}

func truncated(what string) error { return malformed("truncated " + what) }

// str converts a field to a string: a copy, or, when own is set, a view of
// the buffer the decoder owns (DecodePublish).
func str(b []byte, own bool) string {
	if len(b) == 0 {
		return ""
	}
	if own {
		return unsafe.String(&b[0], len(b))
	}
	return string(b)
}

// bin converts Binary Data to a slice the packet keeps: a copy, or, when own
// is set, a capacity-limited view of the owned buffer. Empty data is nil.
func bin(b []byte, own bool) []byte {
	if len(b) == 0 {
		return nil
	}
	if own {
		return b[:len(b):len(b)]
	}
	return bytes.Clone(b)
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendString appends a length-prefixed string; the caller has checked its
// length with checkLen.
func appendString(dst []byte, s string) []byte {
	dst = appendU16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendU16(dst, uint16(len(b)))
	return append(dst, b...)
}

// checkLen fails when a string or binary field does not fit its two-byte
// length.
func checkLen(what string, n int) error {
	if n > maxString {
		return fmt.Errorf("%w: %s of %d bytes is longer than 65535", ErrUnencodable, what, n)
	}
	return nil
}

// knownVersion reports whether v is a protocol level this package speaks.
func knownVersion(v Version) bool { return v == V31 || v == V311 || v == V5 }

// finish checks a computed Remaining Length against the protocol maximum.
func finish(remaining int, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if remaining > MaxRemainingLength {
		return 0, fmt.Errorf("%w: remaining length %d exceeds %d", ErrUnencodable, remaining, MaxRemainingLength)
	}
	return remaining, nil
}
