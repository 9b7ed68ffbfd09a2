package packet

import (
	"errors"
	"io"
	"sync"
)

// poolBufSize is the size of the buffers a Reader borrows while bytes of a
// packet are in flight. Packets up to this size are read through it, several
// per read system call when they come back to back; a larger packet gets a
// body buffer of exactly its size.
const poolBufSize = 4096

// bufPool holds the read buffers shared by all Readers; it is the package's
// only mutable state.
var bufPool = sync.Pool{New: func() any { return new([poolBufSize]byte) }}

// maxEmptyReads is how many (0, nil) reads in a row a Reader tolerates before
// giving up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// Reader reads control packets from a connection.
//
// It holds no buffer while the connection is idle: with nothing buffered it
// blocks in a read into a small array inside the Reader, and it borrows a
// pooled buffer only while bytes of a packet are in flight, giving it back
// once everything buffered has been consumed. When the last read filled the
// whole borrowed buffer, more data is probably waiting in the socket, and
// the Reader keeps the buffer for the next packet.
//
// A Reader is not safe for concurrent use. After ReadPacket returns an error
// the Reader is finished: every later call returns the same error.
type Reader struct {
	src     io.Reader
	max     int
	version Version

	small  [8]byte            // reads land here while nothing is buffered
	pooled *[poolBufSize]byte // borrowed buffer, nil when not borrowed
	r, w   int                // unread bytes are active()[r:w]
	full   bool               // the last read into pooled filled it
	err    error              // sticky error
	rerr   error              // read error held back behind data
	_      [0]func()          // not comparable
}

// NewReader returns a Reader of packets from r that refuses packets larger
// than maxPacketSize bytes (0: the protocol maximum) from their fixed header.
func NewReader(r io.Reader, maxPacketSize int) *Reader {
	return &Reader{src: r, max: maxPacketSize}
}

// SetVersion sets the protocol version that packets after CONNECT are
// decoded with. Until it is called only CONNECT is accepted.
func (r *Reader) SetVersion(v Version) { r.version = v }

// SetMaxPacketSize changes the maximum packet size for the packets read from
// now on (0: the protocol maximum).
func (r *Reader) SetMaxPacketSize(n int) { r.max = n }

// Release gives back the borrowed buffer, if any, and drops whatever was
// buffered. Call it when the connection closes.
func (r *Reader) Release() {
	r.release()
	r.r, r.w = 0, 0
}

// Buffered is the number of bytes read from the source and not yet returned
// as packets: 0 means the next ReadPacket will read from the source.
func (r *Reader) Buffered() int { return r.w - r.r }

func (r *Reader) active() []byte {
	if r.pooled != nil {
		return r.pooled[:]
	}
	return r.small[:]
}

func (r *Reader) release() {
	if r.pooled != nil {
		bufPool.Put(r.pooled)
		r.pooled = nil
		r.full = false
	}
}

// ReadPacket returns the next packet. Before SetVersion it accepts only
// CONNECT, which it decodes with the packet's own protocol version; any
// other first packet is a protocol error reported from its fixed header,
// before its body is read [MQTT-3.1.0-1]. A packet over the maximum size is
// refused from its fixed header too, before anything is allocated for it.
//
// Errors are *Error values (malformed packet, packet too large, protocol
// error, unsupported protocol version), or the error of the underlying
// reader: io.EOF at a packet boundary, io.ErrUnexpectedEOF inside a packet.
// A PUBLISH is decoded with DecodePublish into a fresh *Publish.
func (r *Reader) ReadPacket() (Packet, error) {
	if r.err != nil {
		return nil, r.err
	}
	p, err := r.readPacket()
	if err != nil {
		r.err = err
		r.Release()
	}
	return p, err
}

func (r *Reader) readPacket() (Packet, error) {
	var fh FixedHeader
	var n int
	for {
		var err error
		fh, n, err = ParseFixedHeader(r.active()[r.r:r.w], r.max)
		if err == nil {
			break
		}
		if err != ErrNeedMore {
			return nil, err
		}
		if err := r.fill(); err != nil {
			if err == io.EOF && r.r != r.w {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	if err := r.checkHeader(fh); err != nil {
		return nil, err
	}

	total := n + fh.Remaining
	switch {
	case r.w-r.r >= total:
	case total <= len(r.small) && r.pooled == nil:
		if err := r.fillTo(total); err != nil {
			return nil, err
		}
	case total <= poolBufSize:
		if r.pooled == nil {
			r.pooled = bufPool.Get().(*[poolBufSize]byte)
			r.w = copy(r.pooled[:], r.small[r.r:r.w])
			r.r = 0
		}
		if err := r.fillTo(total); err != nil {
			return nil, err
		}
	default:
		return r.readLarge(fh, n)
	}

	body := r.active()[r.r+n : r.r+total]
	p, err := r.decode(fh, body)
	r.r += total
	if r.r == r.w {
		r.r, r.w = 0, 0
		if !r.full {
			r.release()
		}
	}
	return p, err
}

// checkHeader refuses, from the fixed header alone, what no body can make
// acceptable: anything but CONNECT before the version is known, and type 15
// before 5.0.
func (r *Reader) checkHeader(fh FixedHeader) error {
	switch {
	case r.version == 0 && fh.Type != CONNECT:
		return protocolErr("first packet is " + fh.Type.String() + ", not CONNECT [MQTT-3.1.0-1]")
	case fh.Type == AUTH && r.version != 0 && r.version < V5:
		return malformed("reserved packet type 15 before MQTT 5.0")
	}
	return nil
}

// readLarge reads a packet larger than the pooled buffer into a body buffer
// of exactly its size (the size is checked already): the part that is
// buffered is copied over, the rest read straight into it.
func (r *Reader) readLarge(fh FixedHeader, n int) (Packet, error) {
	// The body grows as its bytes arrive, doubling from what is buffered:
	// a header that announces a large packet and then stalls holds no more
	// memory than the bytes actually sent (BAD-INPUT row 2).
	first := r.active()[r.r+n : r.w]
	body := make([]byte, len(first), min(fh.Remaining, max(2*len(first), poolBufSize)))
	copy(body, first)
	r.r, r.w = 0, 0
	r.release()
	if r.rerr != nil {
		return nil, unexpected(r.rerr)
	}
	for empty := 0; len(body) < fh.Remaining; {
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(fh.Remaining, 2*cap(body)))
			copy(grown, body)
			body = grown
		}
		k, err := r.src.Read(body[len(body):cap(body)])
		body = body[:len(body)+k]
		if k == 0 && err == nil {
			if empty++; empty == maxEmptyReads {
				err = io.ErrNoProgress
			}
		} else {
			empty = 0
		}
		if err != nil && len(body) < fh.Remaining {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, unexpected(err)
		}
	}
	if fh.Type == PUBLISH {
		// body is the Reader's own: the PUBLISH keeps it instead of a copy.
		p := new(Publish)
		if err := decodePublish(p, fh.Flags, body, r.version, true); err != nil {
			return nil, err
		}
		return p, nil
	}
	return r.decode(fh, body)
}

func (r *Reader) decode(fh FixedHeader, body []byte) (Packet, error) {
	if fh.Type == PUBLISH {
		p := new(Publish)
		if err := DecodePublish(p, fh.Flags, body, r.version); err != nil {
			return nil, err
		}
		return p, nil
	}
	return Decode(fh, body, r.version)
}

// fillTo reads until total bytes are buffered at r.r, moving the unread
// bytes to the front of the active buffer first when they would not fit.
func (r *Reader) fillTo(total int) error {
	if r.r+total > len(r.active()) {
		r.compact()
	}
	for r.w-r.r < total {
		if err := r.fill(); err != nil {
			return unexpected(err)
		}
	}
	return nil
}

func (r *Reader) compact() {
	buf := r.active()
	r.w = copy(buf, buf[r.r:r.w])
	r.r = 0
}

// fill reads once into the free space of the active buffer. A read error that
// comes with data is held back until the data is used.
func (r *Reader) fill() error {
	if r.rerr != nil {
		err := r.rerr
		r.rerr = nil
		return err
	}
	buf := r.active()
	if r.w == len(buf) {
		r.compact()
	}
	for i := 0; i < maxEmptyReads; i++ {
		n, err := r.src.Read(buf[r.w:])
		if n < 0 || n > len(buf)-r.w {
			return errors.New("packet: invalid read count from the underlying reader")
		}
		r.w += n
		if r.pooled != nil {
			r.full = r.w == len(buf)
		}
		if n > 0 {
			r.rerr = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// unexpected turns io.EOF inside a packet into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
