package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// The load speaks MQTT 3.1.1, which both brokers implement.
const version = packet.V311

// handshakeTimeout bounds CONNECT→CONNACK and SUBSCRIBE→SUBACK.
const handshakeTimeout = 10 * time.Second

// bufSize is the size of a client's bufio reader and writer.
const bufSize = 32 << 10

// client is one MQTT 3.1.1 connection of the load generator. A client is
// used by at most one reading and one writing goroutine.
type client struct {
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	big []byte // body buffer for frames larger than r's buffer
}

// dialer opens loopback connections. When the ephemeral ports of one source
// address run out (EADDRNOTAVAIL) it moves on to the next source address,
// 127.0.0.2, 127.0.0.3 and so on.
type dialer struct {
	mu  sync.Mutex
	src int // 0: let the kernel choose; n: 127.0.0.(n+1)
}

func (d *dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	for {
		d.mu.Lock()
		src := d.src
		d.mu.Unlock()
		var nd net.Dialer
		if src > 0 {
			nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src+1))}
		}
		nc, err := nd.DialContext(ctx, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || src >= 250 {
			return nc, err
		}
		d.mu.Lock()
		if d.src == src {
			d.src++
		}
		d.mu.Unlock()
	}
}

// connect sends CONNECT (clean session, the given keep-alive) on nc and
// waits for a successful CONNACK, read from r (nc itself or a bufio.Reader
// on it).
func connect(nc net.Conn, r io.Reader, clientID string, keepAlive uint16) error {
	nc.SetDeadline(time.Now().Add(handshakeTimeout))
	defer nc.SetDeadline(time.Time{})
	cp := &packet.Connect{ProtocolName: "MQTT", Version: version, CleanStart: true, KeepAlive: keepAlive, ClientID: clientID}
	b, err := cp.Append(nil, version)
	if err != nil {
		return err
	}
	if _, err := nc.Write(b); err != nil {
		return fmt.Errorf("CONNECT: %w", err)
	}
	pk, err := readPacket(r)
	if err != nil {
		return fmt.Errorf("CONNACK: %w", err)
	}
	ack, ok := pk.(*packet.Connack)
	if !ok {
		return fmt.Errorf("got %v instead of CONNACK", pk.Type())
	}
	if ack.ReasonCode != packet.Success {
		return fmt.Errorf("CONNACK return code %d", ack.ReasonCode)
	}
	return nil
}

// readPacket reads exactly one control packet from r and decodes it with the
// project's codec. It is for the handshakes, not the hot path.
func readPacket(r io.Reader) (packet.Packet, error) {
	hdr := make([]byte, 2, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	for {
		fh, n, err := packet.ParseFixedHeader(hdr, 0)
		if err == packet.ErrNeedMore && len(hdr) < 5 {
			hdr = hdr[:len(hdr)+1]
			if _, err := io.ReadFull(r, hdr[len(hdr)-1:]); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		// hdr holds exactly the fixed header (n bytes): it grew one byte at
		// a time.
		_ = n
		body := make([]byte, fh.Remaining)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return packet.Decode(fh, body, version)
	}
}

// dialClient connects a client to addr over t's transport with keep-alive
// 0 (none: the load generator sends no PINGREQ).
func dialClient(ctx context.Context, d *dialer, t Target, addr, clientID string) (*client, error) {
	nc, err := d.dialTarget(ctx, t, addr)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, r: bufio.NewReaderSize(nc, bufSize), w: bufio.NewWriterSize(nc, bufSize)}
	if err := connect(nc, c.r, clientID, 0); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", clientID, err)
	}
	return c, nil
}

// subscribe subscribes to filter with the requested QoS and checks the grant.
func (c *client) subscribe(filter string, qos byte) error {
	c.nc.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})
	sp := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: qos}}}}
	b, err := sp.Append(nil, version)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	pk, err := readPacket(c.r)
	if err != nil {
		return fmt.Errorf("SUBACK: %w", err)
	}
	ack, ok := pk.(*packet.Suback)
	if !ok || len(ack.ReasonCodes) != 1 {
		return fmt.Errorf("got %v instead of SUBACK", pk.Type())
	}
	if byte(ack.ReasonCodes[0]) != qos {
		return fmt.Errorf("SUBACK granted %#x, asked for QoS %d", byte(ack.ReasonCodes[0]), qos)
	}
	return nil
}

func (c *client) close() { c.nc.Close() }

// readFrame returns the next control packet as its first byte and its body.
// The body is valid until the next call. It is the hot path of subscribers
// and QoS 1 publishers: no allocation, no decoding beyond the fixed header.
func (c *client) readFrame() (byte, []byte, error) {
	b0, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	rem, shift := 0, 0
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		rem |= int(b&0x7F) << shift
		if b < 0x80 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		shift += 7
	}
	if rem <= c.r.Size() {
		body, err := c.r.Peek(rem)
		if err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		c.r.Discard(rem)
		return b0, body, nil
	}
	if cap(c.big) < rem {
		c.big = make([]byte, rem)
	}
	body := c.big[:rem]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return b0, body, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Payload layout: every message carries its send instant and its identity
// in its first 16 bytes; the rest is zero padding up to the payload size.
//
//	0..8   send time, nanoseconds since the run's start instant (monotonic)
//	8..12  publisher index
//	12..16 sequence number within that publisher
const stampSize = 16

// pubFrame is a PUBLISH encoded once; each send rewrites only the packet id
// and the stamp.
type pubFrame struct {
	buf    []byte
	idOff  int // offset of the packet id; 0 for QoS 0
	payOff int // offset of the payload
}

func newPubFrame(topic string, qos byte, payloadSize int) *pubFrame {
	payloadSize = max(payloadSize, stampSize)
	p := &packet.Publish{QoS: qos, Topic: topic, PacketID: 1, Payload: make([]byte, payloadSize)}
	if qos == 0 {
		p.PacketID = 0
	}
	buf, err := p.Append(nil, version)
	if err != nil {
		panic(err) // a topic and payload of benchmark size always encode
	}
	f := &pubFrame{buf: buf, payOff: len(buf) - payloadSize}
	if qos > 0 {
		f.idOff = f.payOff - 2
	}
	return f
}

// stamp fills in the packet id, the send time and the message identity.
func (f *pubFrame) stamp(id uint16, sent time.Duration, pub, seq uint32) []byte {
	if f.idOff > 0 {
		binary.BigEndian.PutUint16(f.buf[f.idOff:], id)
	}
	p := f.buf[f.payOff:]
	binary.BigEndian.PutUint64(p, uint64(sent))
	binary.BigEndian.PutUint32(p[8:], pub)
	binary.BigEndian.PutUint32(p[12:], seq)
	return f.buf
}

// publishBody splits the body of a received 3.1.1 PUBLISH with flags in b0.
func publishBody(b0 byte, body []byte) (qos byte, id uint16, payload []byte, err error) {
	qos = b0 >> 1 & 3
	if len(body) < 2 {
		return 0, 0, nil, errors.New("PUBLISH too short")
	}
	off := 2 + int(binary.BigEndian.Uint16(body))
	if qos > 0 {
		off += 2
	}
	if off > len(body) {
		return 0, 0, nil, errors.New("PUBLISH too short")
	}
	if qos > 0 {
		id = binary.BigEndian.Uint16(body[off-2:])
	}
	return qos, id, body[off:], nil
}

// decodeStamp reads what pubFrame.stamp wrote.
func decodeStamp(p []byte) (sent time.Duration, pub, seq uint32) {
	return time.Duration(binary.BigEndian.Uint64(p)), binary.BigEndian.Uint32(p[8:]), binary.BigEndian.Uint32(p[12:])
}
