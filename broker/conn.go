package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// conn is one client connection. Its reader goroutine (serve) owns the
// inbound side and every piece of state below the "reader" mark; a writer
// goroutine exists only while there is something to write (flush), so an
// idle connection holds one parked goroutine and no buffers.
type conn struct {
	srv  *Server
	nc   net.Conn
	rd   *packet.Reader
	head connectHead // the reader's source: nc, keeping the CONNECT's first bytes
	ip   string      // source address, when counted against MaxConnectionsPerIP

	// reader
	version   packet.Version
	clientID  string
	info      ClientInfo
	sess      *session
	keepAlive time.Duration
	will      *packet.Will
	willID    string // the will's cluster record, if any
	// willRef is willID for other goroutines (CloseConnections).
	willRef   atomic.Pointer[string]
	aliasesIn map[uint16]string
	// the client's own limits (5.0 CONNECT properties)
	clientMaxPacket int
	clientAliasMax  uint16
	requestProblem  bool
	// graceful is set by a DISCONNECT that asks for no will.
	graceful bool
	// authTimer ends the connection when its credentials expire (nil when
	// they do not; see authexpiry.go).
	authTimer *time.Timer
	// pubBucket applies MaxPublishRate (nil without one); pktsIn and
	// pubsIn are packets counted and not yet added to Stats (sys.go).
	pubBucket      *publishBucket
	pktsIn, pubsIn int64
	qosIn          [3]int32 // pubsIn by QoS
	// since is when the connection was accepted (unix ns; admin API).
	since int64
	// sock is the state of reading the socket directly (sockio.go); when
	// it cannot be, head reads through nc, counting the bytes read.
	sock sockReader
	// pending counts this connection's store writes not yet durable.
	pending atomic.Int32
	// established is set once the CONNACK is queued; other goroutines may
	// then read version.
	established atomic.Bool

	// writer: everything below is guarded by wmu
	wmu      sync.Mutex
	wq       []outItem
	spare    []outItem
	wqBytes  int
	wqCtl    int    // control packets in wq: they cannot be dropped
	writing  bool   // the writer is writing a batch taken from wq
	leftover []byte // bytes an inline write left unwritten; flush sends them first
	raw      syscall.RawConn

	// kicks are the connections whose writers this connection's reader
	// starts at the end of its read burst (reader-owned).
	kicks     []*conn
	sinceKick int
	flushing  bool
	closing   bool // no more enqueues; the socket closes once wq is written
	closed    bool
	aliasOut  map[string]uint16 // owned by the flushing goroutine
	aliasNext uint16
	qosOut    [3]int32 // PUBLISHes encoded by QoS, not yet in Stats (flushing goroutine)
}

// outItem is one packet waiting in a connection's write queue: a control
// packet, a compact acknowledgement, or a message delivery.
type outItem struct {
	pkt  packet.Packet
	ack  packet.Type
	id   uint16
	code packet.ReasonCode
	m    outMsg
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, since: time.Now().UnixNano()}
	var reads bool
	c.raw, reads = rawSocket(nc)
	if reads {
		c.head.src = (*sockSource)(c)
	} else {
		c.head.src = &countingConn{Conn: nc, n: &s.stats.BytesIn}
	}
	c.rd = packet.NewReader(&c.head, s.cfg.MaxPacketSize)
	return c
}

// serve runs the connection to its end. A panic while handling this
// connection's input closes only this connection.
func (c *conn) serve() {
	defer func() {
		// Writers owed to other connections start whatever happened here.
		c.runKicks()
		c.flushCounts()
		if r := recover(); r != nil {
			c.srv.stats.Panics.Add(1)
			c.srv.log.Error("panic in connection; closing it", "client_id", c.clientID,
				"remote", c.nc.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
			c.closeNow()
		}
		c.teardown()
	}()
	if !c.handshake() {
		return
	}
	c.onConnected()
	for {
		if c.keepAlive > 0 {
			// [MQTT-3.1.2-24]: no packet within 1.5 times the keep-alive
			// ends the connection.
			if _, ok := c.head.src.(*sockSource); ok {
				c.keepAliveRaw()
			} else {
				c.nc.SetReadDeadline(time.Now().Add(c.keepAlive * 3 / 2))
			}
		}
		pk, err := c.rd.ReadPacket()
		if err != nil {
			c.readFailed(err)
			return
		}
		c.countIn(pk)
		err = c.handle(pk)
		if c.sinceKick++; len(c.kicks) > 0 && (c.rd.Buffered() == 0 || c.sinceKick >= maxKickDelay) {
			c.runKicks()
		}
		if err != nil {
			if err != errDisconnected {
				c.fail(err)
			}
			return
		}
	}
}

// readFailed ends the connection after a read error: a malformed or
// oversized packet gets its reason code (5.0), a keep-alive timeout 0x8D.
func (c *conn) readFailed(err error) {
	var perr *packet.Error
	switch {
	case errors.As(err, &perr):
		c.fail(err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.srv.log.Info("keep-alive expired", "client_id", c.clientID)
		c.disconnect(packet.KeepAliveTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.closeNow()
	default:
		c.srv.log.Debug("read failed", "client_id", c.clientID, "err", err)
		c.closeNow()
	}
}

// fail ends the connection for a protocol violation: 5.0 clients get
// DISCONNECT with the reason code ([MQTT-4.13.1-1]); 3.1.1 clients are closed.
func (c *conn) fail(err error) {
	code := packet.CodeOf(err)
	c.srv.stats.ProtocolErrors.Add(1)
	c.srv.log.Info("closing connection", "client_id", c.clientID, "remote", c.nc.RemoteAddr().String(),
		"reason_code", byte(code), "err", err)
	c.disconnect(code)
}

// disconnect sends a 5.0 client DISCONNECT with code and closes; a 3.1.1
// client (which has no server DISCONNECT) is closed at once.
func (c *conn) disconnect(code packet.ReasonCode) {
	if c.established.Load() && c.version == packet.V5 {
		c.enqueueClose(&packet.Disconnect{ReasonCode: code})
		return
	}
	c.closeNow()
}

// enqueueClose queues a last packet, after which the connection closes.
func (c *conn) enqueueClose(pk packet.Packet) {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return
	}
	c.wq = append(c.wq, outItem{pkt: pk})
	c.closing = true
	start := !c.flushing
	c.flushing = true
	c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if start {
		go c.flush()
	}
}

// closeNow closes the socket; the reader goroutine then tears down.
func (c *conn) closeNow() {
	c.wmu.Lock()
	c.closing = true
	already := c.closed
	c.closed = true
	c.wmu.Unlock()
	if !already {
		c.nc.Close()
	}
}

// ctlWeight is what one queued control packet counts against
// WriteQueueBytes: the memory its queue entry takes.
const ctlWeight = int(unsafe.Sizeof(outItem{}))

// enqueue adds a control packet to the write queue. Control packets cannot
// be dropped, so a client that lets WriteQueueBytes of them pile up behind
// a write its socket does not take (it sends PINGREQs or PUBLISHes but does
// not read the answers) is a slow consumer and is disconnected rather than
// allowed to grow memory.
func (c *conn) enqueue(it outItem) {
	if c.pushControl(it) {
		go c.flush()
	}
}

// enqueueFrom is enqueue by the reader goroutine of kicker: starting the
// writer is left to the end of kicker's read burst (see kick).
func (c *conn) enqueueFrom(kicker *conn, it outItem) {
	if c.pushControl(it) {
		kicker.kick(c)
	}
}

// pushControl queues a control packet and reports whether the caller must
// start the writer.
func (c *conn) pushControl(it outItem) (start bool) {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return false
	}
	if c.writing && (c.wqCtl+1)*ctlWeight > c.srv.cfg.WriteQueueBytes {
		c.wmu.Unlock()
		c.srv.stats.SlowConsumers.Add(1)
		c.srv.log.Info("client reads nothing of what it is sent; closing", "client_id", c.clientID)
		c.closeNow()
		return false
	}
	c.wqCtl++
	c.wq = append(c.wq, it)
	start = !c.flushing
	c.flushing = true
	c.wmu.Unlock()
	return start
}

// enqueueAck queues PUBACK, PUBREC, PUBREL or PUBCOMP without allocating.
func (c *conn) enqueueAck(t packet.Type, id uint16, code packet.ReasonCode) {
	c.enqueue(outItem{ack: t, id: id, code: code})
}

// enqueuePublish queues one delivery and starts a writer goroutine when
// none runs. It reports whether the delivery was queued.
func (c *conn) enqueuePublish(o outMsg) bool {
	queued, start := c.pushPublish(o)
	if start {
		go c.flush()
	}
	return queued
}

// pushPublish queues one delivery; start says the caller must start the
// writer. A QoS 0 message that finds the write queue over its byte bound is
// dropped and counted (a slow consumer must not grow memory); QoS 1/2
// deliveries are bounded by the in-flight window.
func (c *conn) pushPublish(o outMsg) (queued, start bool) {
	n := o.msg.size()
	c.wmu.Lock()
	if c.closing || (o.qos == 0 && c.wqBytes+n > c.srv.cfg.WriteQueueBytes) {
		c.wmu.Unlock()
		if o.qos == 0 {
			c.srv.stats.DroppedQoS0.Add(1)
		}
		return false, false
	}
	c.wq = append(c.wq, outItem{m: o})
	c.wqBytes += n
	start = !c.flushing
	c.flushing = true
	c.wmu.Unlock()
	return true, start
}

// maxKickDelay bounds how many packets a reader handles before it starts
// the writers it owes, however much input is buffered.
const maxKickDelay = 64

// kick records that the writer of target must be started by this
// connection's reader goroutine at the end of its read burst: then one
// non-blocking write sends everything that burst queued for target, and at
// low rates no goroutine is started per message. Only the reader goroutine
// of c calls it.
func (c *conn) kick(target *conn) {
	c.kicks = append(c.kicks, target)
}

// runKicks starts the writers this reader owes.
func (c *conn) runKicks() {
	for i, t := range c.kicks {
		t.writeInline()
		c.kicks[i] = nil
	}
	c.kicks = c.kicks[:0]
	c.sinceKick = 0
}

// writeInline writes what is queued for c with one non-blocking write from
// the calling goroutine; what the socket does not take at once goes to a
// flush goroutine. The caller holds no lock and was told to start the
// writer (flushing is set).
func (c *conn) writeInline() {
	if c.raw == nil {
		go c.flush()
		return
	}
	c.wmu.Lock()
	q := c.wq
	if len(q) == 0 || c.closing || c.leftover != nil {
		c.wmu.Unlock()
		go c.flush()
		return
	}
	c.wq, c.spare = c.spare[:0], nil
	c.wqBytes, c.wqCtl = 0, 0
	c.writing = true
	c.wmu.Unlock()

	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for i := range q {
		buf = c.encode(buf, &q[i])
	}
	c.srv.stats.PacketsOut.Add(int64(len(q)))
	c.addQoSOut()
	n, err := c.tryWrite(buf)
	clear(q)
	c.wmu.Lock()
	c.spare = q[:0]
	c.writing = false
	if err == nil && n < len(buf) {
		c.leftover = append([]byte(nil), buf[n:]...)
	}
	more := c.leftover != nil || len(c.wq) > 0 || c.closing
	if !more {
		c.flushing = false
	}
	c.wmu.Unlock()
	*bp = buf[:0]
	bufPool.Put(bp)
	switch {
	case err != nil:
		c.closeNow()
	case more:
		go c.flush()
	}
}

// tryWrite writes b without blocking and returns how much the socket took.
func (c *conn) tryWrite(b []byte) (int, error) {
	n, werr, err := rawWrite(c.raw, b)
	c.srv.stats.BytesOut.Add(int64(n))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline of an earlier blocking write has passed: leave the
		// bytes to flush, which sets a fresh one.
		return n, nil
	}
	if err != nil {
		return n, err
	}
	return n, werr
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// flush is the writer: it drains the queue into one buffer per batch and
// makes one write call per batch, then exits when the queue is empty.
func (c *conn) flush() {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for {
		c.wmu.Lock()
		lo := c.leftover
		c.leftover = nil
		q := c.wq
		if len(q) == 0 && lo == nil {
			c.flushing = false
			closeAfter := c.closing && !c.closed
			if closeAfter {
				c.closed = true
			}
			if cap(q) > 256 {
				c.wq, c.spare = nil, nil
			}
			c.wmu.Unlock()
			if closeAfter {
				c.nc.Close()
			}
			return
		}
		c.wq, c.spare = c.spare[:0], nil
		c.wqBytes, c.wqCtl = 0, 0
		c.writing = true
		c.wmu.Unlock()

		if lo != nil && !c.write(lo) {
			clear(q)
			q = q[:0]
		}
		buf := (*bp)[:0]
		c.srv.stats.PacketsOut.Add(int64(len(q)))
		for i := range q {
			buf = c.encode(buf, &q[i])
			if len(buf) >= 64<<10 {
				if !c.write(buf) {
					break
				}
				buf = buf[:0]
			}
		}
		if len(buf) > 0 {
			c.write(buf)
		}
		c.addQoSOut()
		*bp = buf[:0]
		clear(q)
		c.wmu.Lock()
		c.spare = q[:0]
		c.writing = false
		c.wmu.Unlock()
	}
}

// write sends one batch; a failed write closes the connection.
func (c *conn) write(b []byte) bool {
	if c.srv.cfg.WriteTimeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	}
	n, err := c.nc.Write(b)
	c.srv.stats.BytesOut.Add(int64(n))
	if err != nil {
		c.closeNow()
		return false
	}
	return true
}

// encode appends one queued item in the connection's protocol version.
func (c *conn) encode(buf []byte, it *outItem) []byte {
	var err error
	switch {
	case it.m.msg != nil:
		return c.encodePublish(buf, &it.m)
	case it.ack != 0:
		a := packet.Ack{PacketType: it.ack, PacketID: it.id, ReasonCode: it.code}
		buf, err = a.Append(buf, c.version)
	default:
		buf, err = it.pkt.Append(buf, c.version)
	}
	if err != nil {
		c.srv.log.Error("encode failed", "client_id", c.clientID, "err", err)
	}
	return buf
}

// encodePublish appends one PUBLISH for this subscriber: its QoS, packet id,
// retain flag, subscription identifiers, remaining expiry and topic alias.
func (c *conn) encodePublish(buf []byte, o *outMsg) []byte {
	m := o.msg
	p := packet.Publish{Topic: m.Topic, Payload: m.Payload, QoS: o.qos, Retain: o.retain, Dup: o.dup, PacketID: o.packetID}
	if c.version == packet.V5 {
		p.Properties = m.Props
		p.Properties.SubscriptionIDs = o.subIDs
		if m.ExpiresAt != 0 {
			left := (m.ExpiresAt - time.Now().UnixNano() + int64(time.Second) - 1) / int64(time.Second)
			p.Properties.MessageExpiry = uint32(max(left, 1))
			p.Properties.Set(packet.PropMessageExpiry)
		}
		c.outboundAlias(&p)
	}
	start := len(buf)
	buf, err := p.Append(buf, c.version)
	if err != nil {
		c.srv.log.Error("encode failed", "client_id", c.clientID, "topic", m.Topic, "err", err)
		return buf[:start]
	}
	c.srv.stats.MessagesOut.Add(1)
	c.qosOut[min(o.qos, 2)]++
	return buf
}

// outboundAlias replaces the topic with an alias the client allowed
// ([MQTT-3.3.2-7]): a known topic goes as alias only, a new one as topic plus
// a freshly assigned alias while aliases remain.
func (c *conn) outboundAlias(p *packet.Publish) {
	limit := min(c.clientAliasMax, c.srv.cfg.OutboundTopicAliases)
	if limit == 0 {
		return
	}
	if a, ok := c.aliasOut[p.Topic]; ok {
		p.Properties.TopicAlias = a
		p.Properties.Set(packet.PropTopicAlias)
		p.Topic = ""
		return
	}
	if c.aliasNext >= limit {
		return
	}
	if c.aliasOut == nil {
		c.aliasOut = make(map[string]uint16)
	}
	c.aliasNext++
	c.aliasOut[p.Topic] = c.aliasNext
	p.Properties.TopicAlias = c.aliasNext
	p.Properties.Set(packet.PropTopicAlias)
}
