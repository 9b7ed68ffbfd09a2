package packet

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
)

// Builders for raw packets in the fixture table. They are written apart from
// the encoder (their own varint, their own framing) so that an encoder bug
// does not cancel out in the tests.

// vbi encodes n as a Variable Byte Integer.
func vbi(n int) []byte {
	var out []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			return out
		}
	}
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// frame builds a whole packet: the first byte, the Remaining Length, the
// parts.
func frame(first byte, parts ...[]byte) []byte {
	body := cat(parts...)
	return cat([]byte{first}, vbi(len(body)), body)
}

// bs is a literal byte sequence.
func bs(b ...byte) []byte { return b }

// lstr is a two-byte-length-prefixed string (or binary data).
func lstr(s string) []byte { return cat(id16(uint16(len(s))), []byte(s)) }

// id16 is a big-endian two-byte integer.
func id16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// props is a property block: Property Length, then the properties.
func props(parts ...[]byte) []byte {
	body := cat(parts...)
	return cat(vbi(len(body)), body)
}

// Single properties.
func pByte(id PropID, v byte) []byte  { return []byte{byte(id), v} }
func pU16(id PropID, v uint16) []byte { return cat([]byte{byte(id)}, id16(v)) }
func pU32(id PropID, v uint32) []byte {
	return []byte{byte(id), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
func pStr(id PropID, s string) []byte { return cat([]byte{byte(id)}, lstr(s)) }
func pVar(id PropID, n int) []byte    { return cat([]byte{byte(id)}, vbi(n)) }
func pUser(k, v string) []byte        { return cat([]byte{byte(PropUserProperty)}, lstr(k), lstr(v)) }
func with(p Properties, ids ...PropID) Properties {
	for _, id := range ids {
		p.Set(id)
	}
	return p
}

// connectHead is the variable header of a CONNECT up to the keep alive.
func connectHead(name string, level, flags byte, keepAlive uint16) []byte {
	return cat(lstr(name), bs(level, flags), id16(keepAlive))
}

// diff describes how two packets differ, for test failures.
func diff(got, want any) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	return fmt.Sprintf("\n got: %s\nwant: %s", show(got), show(want))
}

func show(p any) string {
	s := fmt.Sprintf("%+v", p)
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// clientSent reports whether t is a packet type a client sends to a server.
func clientSent(t Type) bool {
	switch t {
	case CONNACK, SUBACK, UNSUBACK, PINGRESP:
		return false
	}
	return true
}
