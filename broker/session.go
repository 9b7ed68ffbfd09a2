package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// subValue is what the subscription trie stores for one subscription.
type subValue struct {
	sess  *session
	opts  packet.SubOptions
	subID uint32
}

// Subscription is one entry of a session's subscription set, as stored.
type Subscription struct {
	Filter string // as subscribed, with any $share prefix
	Group  string
	Real   string // the filter without the $share prefix
	Opts   packet.SubOptions
	SubID  uint32
}

// session is the state of one client id: its subscriptions, the messages on
// their way to it and the QoS 2 packet ids it has sent us. It outlives its
// connection when it is persistent.
type session struct {
	srv *Server
	id  string

	mu         sync.Mutex
	conn       *conn
	version    packet.Version
	persistent bool
	expiry     uint32 // seconds after disconnect; expiryNever for none
	subs       map[string]Subscription
	nsubs      atomic.Int32 // len(subs), read by publishers without mu
	info       ClientInfo
	inflight   []outMsg // sent and unacknowledged, in sending order
	queue      msgQueue // waiting for a free in-flight slot or for the client
	sendQuota  int      // in-flight window of the current connection
	nextID     uint16
	usedIDs    []uint64 // bitmap of packet ids held by in-flight (and stored queued) messages
	nextSeq    uint64   // store sequence of the last stored message
	trash      []uint64 // store sequences of ended flows, to delete
	wasStored  bool     // a record of this session was written to the store
	// awaitingRel holds inbound QoS 2 packet ids delivered but not released.
	awaitingRel map[uint16]struct{}
	expiryTimer *time.Timer
	willTimer   *time.Timer
	pendingWill *Message   // the will waiting for willTimer
	dropRoutes  []shareRef // routes (filter, group) that go when the session has ended
	ended       bool
	outlives    bool // a copy kept past its expiry (expireSession)

	// Cluster state. epoch is the session's claim (0: not registered).
	// importing holds deliveries in pending while a session handed over by
	// another node is being installed; moving marks a session handed over
	// to another node and not yet finished there.
	epoch         uint64
	pendingWillID string // cluster record of pendingWill
	importing     bool
	imported      chan struct{} // closed when importing ends (nil: not importing)
	pending       []outMsg
	pendingSeq    uint64 // store sequences of pending messages count from pendingSeqBase
	moving        bool
	firstStep     msgSet // the messages the first step of its move carried
	firstStepTo   string // the node that took that first step
	moveTimer     *time.Timer
	dropOps       []StoreOp
	// arrived names, for arrivedWindow after the session arrived from
	// another node, every message it was delivered or placed: a message may
	// reach it twice then, forwarded by a node that routes to its new node
	// and passed on by its previous one (handover.go).
	arrived      msgSet
	arrivedUntil time.Time
	// held keeps the queue from the connection since heldSince: other
	// nodes may still hold older messages of the session (the cluster's
	// holders), which go ahead of the queue when they are handed on
	// (hold.go).
	held      bool
	heldSince time.Time
}

func newSession(s *Server, id string) *session {
	return &session{srv: s, id: id, subs: make(map[string]Subscription)}
}

// deliver hands one message to the session at once (no store write needed
// first): see prepare and place.
func (ss *session) deliver(m *Message, qos byte, retain bool, subIDs []uint32) {
	ss.deliverVia(m, qos, retain, subIDs, nil)
}

// online reports whether a connection is attached.
func (ss *session) online() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.conn != nil
}

// deliverVia is deliver for a message that came through a share group.
func (ss *session) deliverVia(m *Message, qos byte, retain bool, subIDs []uint32, share *shareRef) {
	o := outMsg{msg: m, qos: qos, retain: retain, subIDs: subIDs, share: share}
	ss.mu.Lock()
	var start *conn
	if _, ok := ss.prepareLocked(&o); ok {
		start = ss.placeLocked(o)
	}
	ss.mu.Unlock()
	startWriter(start, nil)
}

// stored reports whether the session's messages go to the store.
func (ss *session) stored() bool { return ss.persistent && ss.srv.store != nil }

// prepare is the first half of a delivery. For a stored session it assigns
// the packet id at enqueue time, so that the id is part of the stored record
// and a restart resends with the same id (which keeps QoS 2 exactly once),
// and the store sequence; other sessions get their id when the message is
// sent, so their queues are not bounded by the id space. It returns the store write that must
// be durable before place. ok is false when the message is not placed now:
// not delivered at all, or held back while the session arrives from another
// node, which still has its store write.
func (ss *session) prepare(o *outMsg) (op StoreOp, write, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	op, ok = ss.prepareLocked(o)
	return op, op.Kind != 0, ok
}

func (ss *session) prepareLocked(o *outMsg) (StoreOp, bool) {
	if ss.ended {
		return StoreOp{}, false
	}
	if ss.importing {
		// Held back, but as durable as any delivery before the publisher
		// is acknowledged: a node killed while a session arrives loses
		// none of them. They are stored apart, after anything the move
		// brings (pendingSeqBase), and take their place in the queue when
		// the move ends (releasePending).
		var op StoreOp
		if o.qos > 0 && ss.stored() {
			ss.pendingSeq++
			o.seq, o.packetID = pendingSeqBase+ss.pendingSeq, 0
			op = StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()}
		}
		ss.pending = append(ss.pending, *o)
		return op, false
	}
	if ss.arrived != nil && !ss.arrivedOnce(o.msg) {
		return StoreOp{}, false
	}
	if o.msg.Will && ss.hasLocked(o.msg) {
		// A will sent again by the node that published it (a node with
		// a route did not acknowledge it): this session had it, here or
		// where it lived before (its delivery history came with it).
		return StoreOp{}, false
	}
	if c := ss.conn; c != nil && c.clientMaxPacket > 0 && estimateSize(o.msg) > c.clientMaxPacket {
		// [MQTT-3.1.2-25]: never send a packet above the client's maximum.
		ss.srv.stats.DroppedTooLarge.Add(1)
		return StoreOp{}, false
	}
	if o.qos == 0 || !ss.stored() {
		return StoreOp{}, true
	}
	o.packetID = ss.newPacketID()
	ss.nextSeq++
	o.seq = ss.nextSeq
	return StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()}, true
}

// deliverLocked is prepare and place in one, for deliveries that commit
// their store writes together: it appends o's store write to ops and
// returns the connection whose writer must be started (nil: none). Caller
// holds mu.
func (ss *session) deliverLocked(o outMsg, ops []StoreOp) ([]StoreOp, *conn) {
	op, ok := ss.prepareLocked(&o)
	if op.Kind != 0 {
		ops = append(ops, op)
	}
	if !ok {
		return ops, nil
	}
	return ops, ss.placeLocked(o)
}

// place is the second half of a delivery: straight to the connection when a
// slot in the in-flight window is free, into the bounded queue otherwise.
// kicker, when not nil, is the connection whose reader goroutine runs this:
// it starts the writer at the end of its read burst instead of a goroutine
// being started now.
// It reports false when the session has ended since prepare.
func (ss *session) place(o outMsg, kicker *conn) bool {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return false
	}
	start := ss.placeLocked(o)
	ss.mu.Unlock()
	startWriter(start, kicker)
	return true
}

// startWriter starts the writer of c (nil: nothing to start), through
// kicker's end of burst when there is a kicker.
func startWriter(c, kicker *conn) {
	switch {
	case c == nil:
	case kicker != nil:
		kicker.kick(c)
	default:
		go c.flush()
	}
}

// placeLocked places o and returns the connection whose writer must be
// started (nil: none). Caller holds mu.
func (ss *session) placeLocked(o outMsg) (start *conn) {
	if ss.ended {
		return nil
	}
	c := ss.conn
	if o.qos == 0 {
		if c != nil {
			if _, s := c.pushPublish(o); s {
				return c
			}
		} else if ss.persistent && ss.srv.cfg.QueueQoS0 {
			ss.push(o)
		}
		return nil
	}
	if c != nil && !ss.held && ss.queue.len() == 0 && len(ss.inflight) < ss.sendQuota {
		if ss.sendDeferred(o) {
			return c
		}
		return nil
	}
	ss.push(o)
	return nil
}

// estimateSize bounds the encoded size of a message from above.
func estimateSize(m *Message) int {
	n := 16 + len(m.Topic) + len(m.Payload) + len(m.Props.ContentType) + len(m.Props.ResponseTopic) + len(m.Props.CorrelationData)
	for _, u := range m.Props.UserProperties {
		n += 5 + len(u.Key) + len(u.Value)
	}
	return n + 32
}

// send writes a QoS 1/2 message into the in-flight window. Caller holds mu
// and has checked that a connection and a window slot exist.
func (ss *session) send(o outMsg) {
	if ss.sendDeferred(o) {
		go ss.conn.flush()
	}
}

// sendDeferred is send that leaves starting the writer to the caller: it
// reports whether the writer must be started.
func (ss *session) sendDeferred(o outMsg) (start bool) {
	if o.packetID == 0 {
		o.packetID = ss.newPacketID()
	}
	o.state = statePublish
	ss.inflight = append(ss.inflight, o)
	_, start = ss.conn.pushPublish(o)
	return start
}

// newPacketID returns a non-zero id used by no queued or in-flight message
// of this session ([MQTT-2.2.1-3]). A session of the cluster starts its ids
// where its claim epoch says (startPacketID), not at 1.
func (ss *session) newPacketID() uint16 {
	if ss.nextID == 0 && ss.epoch != 0 {
		ss.nextID = startPacketID(ss.epoch)
	}
	for {
		ss.nextID++
		id := ss.nextID
		if id == 0 || ss.usedIDs != nil && ss.usedIDs[id>>6]&(1<<(id&63)) != 0 {
			continue
		}
		ss.markID(id)
		return id
	}
}

// startPacketID is where the packet ids of a session claimed with epoch
// start: spread over the id space by the epoch. The client keeps the QoS 2
// ids it acknowledged with PUBREC until their PUBREL and takes a PUBLISH
// with such an id and DUP as the message it already has. A node that
// resumes a session without its previous node's state (that node is down)
// must not give new messages the ids of the ones that node had in flight:
// once the client completes a new flow under one of those ids, the old
// message, handed on when its node is back and resent with DUP, would be
// taken as new and delivered twice. Starting each claim at its own place
// keeps the two sets of ids apart.
func startPacketID(epoch uint64) uint16 {
	id := uint16((epoch * 0x9e3779b97f4a7c15) >> 48)
	if id == 0 {
		id = 1
	}
	return id - 1
}

// markID records packet id as held.
func (ss *session) markID(id uint16) {
	if ss.usedIDs == nil {
		ss.usedIDs = make([]uint64, 1024)
	}
	ss.usedIDs[id>>6] |= 1 << (id & 63)
}

// retire ends the flow of a delivery its client acknowledged: the message
// is remembered as delivered (a hand-on does not bring it again), its
// packet id freed and its stored record deleted. Caller holds mu.
func (ss *session) retire(o *outMsg) {
	if ss.persistent && ss.srv.cluster != nil && o.qos > 0 {
		ss.srv.recent.add(ss.id, o.msg)
	}
	ss.discard(o)
}

// discard lets go of a message that did not reach the client here (handed
// to another node, dropped from a full queue, expired): its packet id is
// freed and its stored record deleted. Caller holds mu.
func (ss *session) discard(o *outMsg) {
	if id := o.packetID; id != 0 && ss.usedIDs != nil {
		ss.usedIDs[id>>6] &^= 1 << (id & 63)
	}
	if o.seq != 0 {
		ss.trash = append(ss.trash, o.seq)
	}
}

// push appends to the queue within its bounds; a full queue drops the oldest
// or the newest message by configuration, and counts the drop.
func (ss *session) push(o outMsg) {
	cfg := &ss.srv.cfg
	n := o.msg.size()
	limit := cfg.QueueMessages
	if ss.stored() {
		// Queued messages of a stored session hold packet ids.
		limit = min(limit, 65535-int(cfg.MaxInflight)-1)
	}
	for ss.queue.len() > 0 && (ss.queue.len() >= limit || ss.queue.bytes+n > cfg.QueueBytes) {
		ss.srv.stats.DroppedQueueFull.Add(1)
		if !cfg.DropOldest {
			ss.discard(&o)
			return
		}
		old := ss.queue.pop()
		ss.discard(&old)
	}
	ss.queue.push(o)
}

// refill moves queued messages into free in-flight slots. Caller holds mu.
func (ss *session) refill() {
	c := ss.conn
	if c == nil || ss.held {
		return
	}
	now := time.Now().UnixNano()
	for ss.queue.len() > 0 && len(ss.inflight) < ss.sendQuota {
		o := ss.queue.pop()
		if o.msg.expired(now) {
			ss.srv.stats.DroppedExpired.Add(1)
			ss.discard(&o)
			continue
		}
		if o.qos == 0 {
			c.enqueuePublish(o)
			continue
		}
		ss.send(o)
	}
}

// acknowledge handles PUBACK, PUBREC and PUBCOMP from the client. It reports
// whether the packet id was in flight in the matching state, and for a
// PUBREC of a stored message the store write that must be durable before
// the PUBREL goes out.
func (ss *session) acknowledge(t packet.Type, id uint16) (bool, []StoreOp) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for i := range ss.inflight {
		o := &ss.inflight[i]
		if o.packetID != id {
			continue
		}
		switch {
		case t == packet.PUBACK && o.qos == 1,
			t == packet.PUBCOMP && o.qos == 2 && o.state == stateRel:
			ss.removeInflight(i)
			return true, nil
		case t == packet.PUBREC && o.qos == 2:
			if o.state == stateRel || o.seq == 0 {
				o.state = stateRel
				return true, nil
			}
			o.state = stateRel
			return true, []StoreOp{{Kind: OpReleaseMessage, ClientID: ss.id, Seq: o.seq}}
		}
		return false, nil
	}
	return false, nil
}

// dropInflight forgets a QoS 1/2 delivery the client refused with a PUBACK
// or PUBREC reason code of 0x80 or above ([MQTT-4.3.3-4]... the flow ends).
func (ss *session) dropInflight(id uint16) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for i := range ss.inflight {
		if ss.inflight[i].packetID == id {
			ss.removeInflight(i)
			return
		}
	}
}

// removeInflight ends the flow at index i and refills the window. Caller
// holds mu.
func (ss *session) removeInflight(i int) {
	n := len(ss.inflight)
	ss.retire(&ss.inflight[i])
	copy(ss.inflight[i:], ss.inflight[i+1:])
	ss.inflight[n-1] = outMsg{}
	ss.inflight = ss.inflight[:n-1]
	ss.refill()
}

// resume attaches a new connection and resends what was in flight, in order,
// with DUP set ([MQTT-4.4.0-1]), PUBREL for those already PUBRECed, then
// fills the window from the queue. Caller holds mu.
func (ss *session) resume(c *conn) {
	ss.conn = c
	now := time.Now().UnixNano()
	kept := ss.inflight[:0]
	for _, o := range ss.inflight {
		if o.state == statePublish && o.msg.expired(now) && ss.version == packet.V5 {
			ss.srv.stats.DroppedExpired.Add(1)
			ss.discard(&o)
			continue
		}
		kept = append(kept, o)
	}
	clear(ss.inflight[len(kept):])
	ss.inflight = kept
	for i := range ss.inflight {
		o := &ss.inflight[i]
		if o.state == stateRel {
			c.enqueueAck(packet.PUBREL, o.packetID, packet.Success)
			continue
		}
		o.dup = true
		c.enqueuePublish(*o)
	}
	ss.refill()
}

// msgQueue is a FIFO ring of deliveries with a byte count.
type msgQueue struct {
	buf   []outMsg
	head  int
	n     int
	bytes int
}

func (q *msgQueue) len() int { return q.n }

func (q *msgQueue) push(o outMsg) {
	if q.n == len(q.buf) {
		nb := make([]outMsg, max(8, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			nb[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = o
	q.n++
	q.bytes += o.msg.size()
}

func (q *msgQueue) pop() outMsg {
	o := q.buf[q.head]
	q.buf[q.head] = outMsg{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= o.msg.size()
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > 64 {
			q.buf = nil
		}
	}
	return o
}

// each calls fn for every queued delivery, oldest first.
func (q *msgQueue) each(fn func(o *outMsg)) {
	for i := 0; i < q.n; i++ {
		fn(&q.buf[(q.head+i)%len(q.buf)])
	}
}

// hasLocked reports whether the session holds m (in flight or queued) or
// delivered it lately. Caller holds ss.mu.
func (ss *session) hasLocked(m *Message) bool {
	if m.ID == 0 {
		return false
	}
	if ss.srv.recent.has(ss.id, m) {
		return true
	}
	for i := range ss.inflight {
		if o := ss.inflight[i].msg; o.ID == m.ID && o.Node == m.Node {
			return true
		}
	}
	held := false
	ss.queue.each(func(o *outMsg) {
		if o.msg.ID == m.ID && o.msg.Node == m.Node {
			held = true
		}
	})
	return held
}
