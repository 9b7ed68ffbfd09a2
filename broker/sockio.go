package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Plain TCP connections are read and written with raw system calls on their
// non-blocking socket, and wait for input in the runtime's poller through
// syscall.RawConn. A read or write of a non-blocking socket never blocks, so
// it needs none of what the runtime does around a system call that might
// (syscall.Syscall hands the P over and, when the process was idle, wakes
// the sysmon thread, which then polls every 20 µs until the process is idle
// again). At a low message rate, when the process falls idle between
// messages, that wake-up and the polling after it cost more CPU than the
// MQTT work itself.

// socketReads is implemented by connections whose Read reads straight from
// the socket that SyscallConn returns (no bytes buffered in front of it), so
// that the broker may read through SyscallConn instead.
type socketReads interface {
	syscall.Conn
	ReadsSocket() bool
}

// rawSocket returns the socket of nc for raw reads (false when reads must go
// through nc.Read) and for raw writes (nil when writes must go through
// nc.Write).
func rawSocket(nc net.Conn) (raw syscall.RawConn, reads bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	switch c := nc.(type) {
	case *net.TCPConn:
		return raw, true
	case socketReads:
		return raw, c.ReadsSocket()
	}
	return raw, false
}

// sysRead is read(2) without the runtime's system call bookkeeping; fd must
// be non-blocking.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// sysWrite is write(2) without the runtime's system call bookkeeping; fd
// must be non-blocking.
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// sockSmallRead is the size below which a read lands in a pooled buffer of
// the connection rather than in the caller's: the packet reader reads into
// an 8-byte array while it holds no buffer of its own, and a whole packet
// should come in with one system call.
const sockSmallRead = 512

// sockBufSize is the size of those buffers: small, because every connection
// that wakes up holds one for an instant, and 10,000 of them may at once.
const sockBufSize = 2048

var sockBufs = sync.Pool{New: func() any { return new([sockBufSize]byte) }}

// sockReader is the state a connection keeps for reading its socket
// directly (sockSource). It holds no buffer while the socket is idle: a
// small read borrows a pooled one for the system call, returns what fits
// and keeps the rest for the next reads, giving the buffer back once they
// have taken everything. It is kept small: every connection has one.
//
// It also keeps the keep-alive deadline without resetting the socket's
// deadline timer for every packet: the deadline is set once, and when it
// passes it moves to the last packet's time plus the allowed idle time if a
// packet came since.
type sockReader struct {
	bp    *[sockBufSize]byte // borrowed from sockBufs, nil when nothing is kept
	last  time.Duration      // keep-alive: when the reader last asked for a packet (since sockEpoch)
	r, w  uint16             // kept bytes are bp[r:w]
	armed bool               // the keep-alive deadline is set
}

// sockEpoch is the origin of sockReader.last, so that it is a monotonic
// time in eight bytes.
var sockEpoch = time.Now()

// sockSource is a connection seen as the byte source of its packet reader
// when its socket is read directly.
type sockSource conn

// keepAliveRaw records, before the reader waits for the next packet, that the
// connection must end when none comes within 1.5 times the keep-alive
// ([MQTT-3.1.2-24]). Only the reader goroutine calls it.
func (c *conn) keepAliveRaw() {
	s := &c.sock
	s.last = time.Since(sockEpoch)
	if !s.armed {
		s.armed = true
		c.nc.SetReadDeadline(sockEpoch.Add(s.last + c.keepAlive*3/2))
	}
}

func (src *sockSource) Read(p []byte) (int, error) {
	c := (*conn)(src)
	for {
		n, err := c.sockRead(p)
		if err == nil || !c.sock.armed || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		next := sockEpoch.Add(c.sock.last + c.keepAlive*3/2)
		if !time.Now().Before(next) {
			return n, err
		}
		// Packets came after the deadline was set: it moves to the last
		// one's time plus the allowed idle time.
		c.nc.SetReadDeadline(next)
	}
}

// sockRead reads from the kept bytes, else once from the socket, waiting in
// the poller while it has nothing.
func (c *conn) sockRead(p []byte) (int, error) {
	s := &c.sock
	if s.r < s.w {
		n := copy(p, s.bp[s.r:s.w])
		s.r += uint16(n)
		if s.r == s.w {
			s.release()
		}
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	op := readOps.Get().(*readOp)
	op.c, op.p = c, p
	err := c.raw.Read(op.fn)
	n, errno, eof := op.n, op.errno, op.eof
	*op = readOp{fn: op.fn}
	readOps.Put(op)
	if s.r == s.w {
		s.release()
	}
	switch {
	case n > 0:
		return n, nil
	case eof:
		return 0, io.EOF
	case errno != 0:
		return 0, errno
	}
	return 0, err
}

// release gives back the borrowed buffer.
func (s *sockReader) release() {
	if s.bp != nil {
		sockBufs.Put(s.bp)
		s.bp = nil
	}
	s.r, s.w = 0, 0
}

// readOp is one read through RawConn.Read: its destination and result, and
// its callback as a func value made once per pooled readOp rather than a
// closure per read.
type readOp struct {
	c     *conn
	p     []byte
	n     int
	errno syscall.Errno
	eof   bool
	fn    func(uintptr) bool
}

var readOps = sync.Pool{New: func() any {
	op := new(readOp)
	op.fn = op.readable
	return op
}}

// readable reads into op.p once the socket has input. It returns false to
// wait in the poller.
func (op *readOp) readable(fd uintptr) bool {
	s := &op.c.sock
	p := op.p
	dst := p
	if len(p) < sockSmallRead {
		if s.bp == nil {
			s.bp = sockBufs.Get().(*[sockBufSize]byte)
		}
		dst = s.bp[:]
	}
	for {
		k, e := sysRead(fd, dst)
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// Nothing to read: hold no buffer while the poller waits.
			s.release()
			return false
		default:
			op.errno = e
			return true
		}
		if k == 0 {
			op.eof = true
			return true
		}
		op.c.srv.stats.BytesIn.Add(int64(k))
		if len(p) < sockSmallRead {
			op.n = copy(p, dst[:k])
			s.r, s.w = uint16(op.n), uint16(k)
		} else {
			op.n = k
		}
		return true
	}
}

// writeOp is one non-blocking write through RawConn.Write, like readOp.
type writeOp struct {
	b     []byte
	n     int
	errno syscall.Errno
	fn    func(uintptr) bool
}

var writeOps = sync.Pool{New: func() any {
	op := new(writeOp)
	op.fn = op.writable
	return op
}}

// rawWrite writes as much of b as the socket takes at once. It returns how
// much that was, the write's error and RawConn.Write's (a closed socket, a
// passed deadline).
func rawWrite(raw syscall.RawConn, b []byte) (n int, werr, err error) {
	op := writeOps.Get().(*writeOp)
	op.b = b
	err = raw.Write(op.fn)
	n = op.n
	if op.errno != 0 {
		werr = op.errno
	}
	*op = writeOp{fn: op.fn}
	writeOps.Put(op)
	return n, werr, err
}

func (op *writeOp) writable(fd uintptr) bool {
	for op.n < len(op.b) {
		k, e := sysWrite(fd, op.b[op.n:])
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return true
		case e != 0:
			op.errno = e
			return true
		case k <= 0:
			return true
		}
		op.n += k
	}
	return true
}
