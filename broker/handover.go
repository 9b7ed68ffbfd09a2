package broker

import (
	"context"
	"errors"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// SessionCluster is implemented by a Cluster whose nodes hand sessions to
// each other as their clients move, and keep wills beyond the life of the
// node that holds the connection. A broker whose cluster does not implement
// it keeps its sessions and wills to itself.
type SessionCluster interface {
	// ClaimSession makes this node the owner of the session of
	// req.ClientID before the CONNACK: the claim is recorded cluster-wide
	// (a client id has one owner at a time) and a connection of the client
	// elsewhere is closed. When another node held a session that lives on,
	// the transfer carries it; its Finish, called once this node routes the
	// session's subscriptions, ends the session there and returns what it
	// collected meanwhile. An error (no quorum) refuses the CONNECT.
	ClaimSession(ctx context.Context, req SessionClaim) (*SessionTransfer, error)
	// ReleaseSession records that the connection of a persistent session
	// closed; the session stays here for expiry seconds.
	ReleaseSession(clientID string, epoch uint64, expiry uint32)
	// EndSession records that a claimed session ended here.
	EndSession(clientID string, epoch uint64)
	// SessionLivesOn reports whether the cluster records the session of
	// clientID, claimed here as epoch, as alive when its expiry here
	// came (under a later claim of another node, or with its release not
	// recorded yet), and when to ask again.
	SessionLivesOn(clientID string, epoch uint64) (again time.Duration, ok bool)
	// SetWill registers the will of a connection so that it is published
	// even when this node dies; ClearWill drops it once it is published or
	// cancelled. Both return at once; the cluster applies them in order.
	SetWill(w WillRecord) (id string)
	ClearWill(id string)
	// SetSubscriptions records the subscriptions of a claimed persistent
	// session, so that they move with it even when this node dies.
	SetSubscriptions(clientID string, epoch uint64, subs []Subscription)
	// ClaimWill is asked before the broker publishes the will SetWill
	// registered as id, and calls publish with whether this node may: a
	// will is published once, by this node or — when the cluster took the
	// node for dead — by the leader, whichever claims it first. publish
	// may be called later, from another goroutine.
	ClaimWill(id string, publish func(ok bool))
	// PassOn sends a delivery to the session of clientID on owner, the
	// node it moved to (DeliverToSession there), and calls done once owner
	// has placed it, or with the failure.
	PassOn(owner, clientID string, d SessionDelivery, done func(error))
	// HandOnRest takes the messages a session collected here after it
	// left for a node that never finished the move (it died meanwhile),
	// for the node that owns the session now; first is what the move's
	// first step carried to that node, which holds it.
	HandOnRest(clientID string, rec *SessionRecord, first FirstStep)
}

// SessionClaim is what a CONNECT asks of the cluster.
type SessionClaim struct {
	ClientID   string
	Persistent bool
	Expiry     uint32
	CleanStart bool
}

// SessionTransfer is the outcome of a claim.
type SessionTransfer struct {
	// Epoch is the claim's epoch (0: the session is not registered).
	Epoch uint64
	// Record is the session as the previous owner held it: subscriptions,
	// messages in flight (with their packet ids) then queued, and the QoS 2
	// packet ids its client has not released. Nil when there is none.
	Record *SessionRecord
	// Finish, when set, completes the move (see ClaimSession): it returns
	// the session as the previous owner held it in the end.
	Finish func(ctx context.Context) (*SessionRecord, error)
	// Hold: other nodes than the one Finish asks may hold older messages
	// of the session; its queue waits for them (HoldRelease, hold.go).
	Hold bool
	// Discard: the cluster knows no such session (it expired, or ended,
	// elsewhere). A copy this node still holds is stale: it is discarded
	// as by a clean start, and the client gets session present 0.
	Discard bool
}

// WillRecord is a will as the cluster keeps it.
type WillRecord struct {
	ClientID string
	Message  *Message
	// Delay is the Will Delay Interval and SessionExpiry the session's
	// expiry (seconds): the will goes after the shorter of them.
	Delay, SessionExpiry uint32
}

// moveTimeout is Config.MoveTimeout, one minute unless set.
func (s *Server) moveTimeout() time.Duration {
	if s.cfg.MoveTimeout > 0 {
		return s.cfg.MoveTimeout
	}
	return time.Minute
}

// pendingSeqBase is where the store sequences of deliveries held back while
// a session arrives begin: above any sequence of its queue, so that after a
// restart they come after what the move brought (restore renumbers them).
const pendingSeqBase = 1 << 48

// sessionCluster returns the cluster's session side, or nil.
func (s *Server) sessionCluster() SessionCluster {
	sc, _ := s.cluster.(SessionCluster)
	return sc
}

// claimSession claims the client's session in the cluster before the
// CONNACK; a claim that cannot be recorded refuses the CONNECT with 0x88
// (3.1.1: 0x03 server unavailable).
func (c *conn) claimSession(cp *packet.Connect) (*SessionTransfer, bool) {
	sc := c.srv.sessionCluster()
	if sc == nil {
		return nil, true
	}
	persistent, expiry := c.srv.sessionLifetime(cp)
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.cfg.ClusterTimeout)
	defer cancel()
	tr, err := sc.ClaimSession(ctx, SessionClaim{ClientID: cp.ClientID, Persistent: persistent, Expiry: expiry, CleanStart: cp.CleanStart})
	if err != nil {
		c.srv.log.Warn("session not claimed in the cluster", "client_id", cp.ClientID, "err", err)
		c.refuse(packet.ServerUnavailable, err)
		return nil, false
	}
	return tr, true
}

// adopt installs the session another node handed over, before attach
// resumes it: its subscriptions are routed here first, then the old owner
// ends its copy and hands over what reached it meanwhile, and the messages
// go into the session in order — those that reached both nodes once. With
// Clean Start nothing of the old session is kept, but the old owner still
// ends it.
func (s *Server) adopt(cp *packet.Connect, tr *SessionTransfer, persistent bool, expiry uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ClusterTimeout)
	defer cancel()
	if cp.CleanStart {
		// Nothing of the old session is kept, but the old owner ends it.
		if tr.Finish != nil {
			if _, err := tr.Finish(ctx); err != nil {
				s.log.Warn("session takeover not finished", "client_id", cp.ClientID, "err", err)
			}
		}
		return
	}
	if tr.Record == nil && tr.Finish == nil {
		return
	}
	rec := tr.Record
	if rec == nil {
		rec = &SessionRecord{ClientID: cp.ClientID}
	}
	// What the client was delivered through the previous nodes is known
	// before the session can take a message: a node handing on its stale
	// copy of the session may reach it before its record is imported.
	seen := make(msgSet)
	s.remember(rec, seen)
	ss := newSession(s, cp.ClientID)
	ss.persistent, ss.expiry, ss.version = persistent, expiry, cp.Version
	// The claim's epoch from the start: a stored session numbers the
	// messages it queues as they come (startPacketID), and the import
	// below queues the previous node's.
	ss.epoch = tr.Epoch
	ss.importing = true
	ss.imported = make(chan struct{})
	ss.arrived, ss.arrivedUntil = make(msgSet), time.Now().Add(arrivedWindow)
	s.mu.Lock()
	old := s.sessions[cp.ClientID]
	var stale *SessionRecord
	sameClaim := false
	if old != nil {
		// A copy of the session this node kept while the session was
		// elsewhere (cut off from the cluster then): what it collected
		// meanwhile joins the arriving session below. One installed for
		// this very claim (messages handed on to the session while its
		// CONNECT was still taking it over) is no stale copy.
		old.mu.Lock()
		if !old.ended {
			stale = old.exportLocked(true)
			sameClaim = tr.Epoch != 0 && old.epoch == tr.Epoch
		}
		s.dropLocked(old)
		old.mu.Unlock()
	}
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	if old != nil {
		s.finishDrop(old)
	}
	if ss.stored() {
		// Stored (after the old copy's deletion: the store keeps the
		// order of commits) before its subscriptions bring deliveries:
		// the store ignores messages of a session it has no record of,
		// and the deliveries held back while it arrives are stored.
		ss.mu.Lock()
		op := ss.sessionOp(0)
		ss.mu.Unlock()
		s.commitOps([]StoreOp{op}, true)
	}
	s.installSubscriptions(ss, rec)
	s.importRecord(ss, rec, seen, true)
	if sameClaim && len(stale.Messages) > 0 {
		// Handed on to the session by nodes that had it, as to any
		// session here: the same checks (what it holds, what it
		// delivered lately) keep each once.
		ds, _ := HandOnDeliveries(stale)
		s.log.Info("messages handed on to an arriving session before it arrived join it", "client_id", ss.id, "messages", len(ds))
		s.deliverOrDrop(ctx, ss.id, ds)
	} else if stale != nil && len(stale.Messages) > 0 {
		// After what the move brought, less what the client had, as a
		// hand-on. Most of what the copy collected also reached the
		// session where it was, and the delivery history the session
		// brings covers only its last deliveredHistory messages: a QoS 1
		// message may come twice, a QoS 2 one must not
		// ([MQTT-4.3.3-2]). A QoS 2 message joins only when the history
		// reaches back past it (it holds an older message of the node
		// that received it) and does not have it: then it never reached
		// the client where the session was. One that may have reached it
		// from here (sent, its PUBREC not seen) stays out.
		all, _ := HandOnDeliveries(stale)
		covered := newHistoryStart(rec.Delivered)
		ds := all[:0]
		for _, d := range all {
			if d.QoS < 2 || d.PacketID == 0 && covered.before(d.Msg) && !seen.has(d.Msg) && !s.recent.has(ss.id, d.Msg) {
				ds = append(ds, d)
			}
		}
		if n := len(all) - len(ds); n > 0 {
			s.stats.PassOnFailures.Add(int64(n))
		}
		s.log.Info("stale copy of an arriving session: its messages join the session", "client_id", ss.id,
			"messages", len(ds), "qos2_dropped", len(all)-len(ds))
		s.deliverOrDrop(ctx, ss.id, ds)
	}
	if tr.Finish == nil {
		s.releasePending(ss, seen)
		return
	}
	tail, err := tr.Finish(ctx)
	if err == nil {
		s.installSubscriptions(ss, tail)
		s.importRecord(ss, tail, seen, true)
		s.releasePending(ss, seen)
		return
	}
	// The previous node is slow to answer: the client gets its session
	// now, with what came in the first step; deliveries published since
	// wait (in order) until the rest arrives or the move is given up.
	s.log.Warn("session takeover not finished yet; finishing in the background", "client_id", ss.id, "err", err)
	go s.finishLater(ss, tr.Finish, seen)
}

// historyStart is, per node, the lowest id of that node's messages in a
// session's delivery history.
type historyStart map[string]uint64

func newHistoryStart(delivered []MessageRef) historyStart {
	h := make(historyStart)
	for _, d := range delivered {
		if d.ID == 0 {
			continue
		}
		if lo, ok := h[d.Node]; !ok || d.ID < lo {
			h[d.Node] = d.ID
		}
	}
	return h
}

// before reports whether the history holds a message that m's node
// received before m: the history reaches back past m.
func (h historyStart) before(m *Message) bool {
	lo, ok := h[m.Node]
	return ok && m.ID > lo
}

// installSubscriptions adds the subscriptions of rec that ss lacks, and
// waits until the cluster routes them here.
func (s *Server) installSubscriptions(ss *session, rec *SessionRecord) {
	if rec == nil {
		return
	}
	var first []shareRef
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	for _, sub := range rec.Subscriptions {
		if _, ok := ss.subs[sub.Filter]; ok {
			continue
		}
		ss.subs[sub.Filter] = sub
		if replaced, _ := s.subs.Add(sub.Real, sub.Group, ss.id, subValue{sess: ss, opts: sub.Opts, subID: sub.SubID}); !replaced && s.routeAdded(sub.Real, sub.Group) {
			first = append(first, shareRef{filter: sub.Real, group: sub.Group})
		}
	}
	ss.nsubs.Store(int32(len(ss.subs)))
	ss.mu.Unlock()
	for _, r := range first {
		if err := s.setRouteOf(r.filter, r.group, 1); err != nil {
			s.log.Warn("route of a moved session not recorded; retrying", "client_id", ss.id, "topic", r.filter, "group", r.group, "err", err)
			s.keepRouting(r.filter, r.group)
		}
	}
}

// moveHold bounds how long an arriving session holds back its deliveries
// while the node it comes from does not answer the second step of the
// move: past it they go out, and what that node held comes after them
// when it answers (a reorder, where holding on would let a session whose
// client comes and goes lose them with its expiry).
const moveHold = 2 * time.Second

// finishLater retries the second step of a move until it succeeds or the
// previous node would have ended the session anyway (moveTimeout).
func (s *Server) finishLater(ss *session, finish func(context.Context) (*SessionRecord, error), seen msgSet) {
	start := time.Now()
	deadline := start.Add(s.moveTimeout())
	wait := 200 * time.Millisecond
	released := false
	hold := time.NewTimer(moveHold)
	defer hold.Stop()
	for {
		// The deliveries go out after moveHold even while an attempt is
		// still waiting for the previous node: an attempt may take up to
		// its timeout (a slow link), and the client waiting meanwhile for
		// what was published since its CONNECT may leave and let the
		// session expire with it (937 messages in a jepsen-lite run).
		done := make(chan finishResult, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tail, err := finish(ctx)
			done <- finishResult{tail, err}
		}()
		var r finishResult
		if released {
			r = <-done
		} else {
			select {
			case r = <-done:
			case <-hold.C:
				s.releaseEarly(ss, seen, "an attempt is still waiting for the previous node")
				released = true
				r = <-done
			}
		}
		tail, err := r.tail, r.err
		if err == nil {
			s.installSubscriptions(ss, tail)
			s.importRecord(ss, tail, seen, false)
			break
		}
		if errors.Is(err, ErrPreviousNodeDown) {
			s.log.Warn("session takeover given up: its previous node is down; what it holds comes when it is back",
				"client_id", ss.id, "err", err)
			break
		}
		if time.Now().After(deadline) {
			s.log.Warn("session takeover given up: messages that reached the previous node meanwhile stay there",
				"client_id", ss.id, "err", err)
			break
		}
		if !released && time.Since(start) >= moveHold {
			s.releaseEarly(ss, seen, err.Error())
			released = true
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
	s.releasePending(ss, seen)
}

// finishResult is what one attempt of a move's second step returned.
type finishResult struct {
	tail *SessionRecord
	err  error
}

// releaseEarly lets the deliveries of an arriving session go out before
// its previous node answered (moveHold passed).
func (s *Server) releaseEarly(ss *session, seen msgSet, why string) {
	s.log.Warn("session takeover not finished: deliveries go out; what the previous node holds follows when it answers",
		"client_id", ss.id, "err", why)
	// The session is still arriving all the same: should it move on
	// meanwhile, its node waits for the rest (FinishHandOverTo).
	s.placePending(ss, seen, false)
}

// importRecord adds the messages and QoS 2 state of a handed-over record
// to ss, skipping messages seen before; wait says whether to wait until
// the store has them (before the CONNACK).
func (s *Server) importRecord(ss *session, rec *SessionRecord, seen msgSet, wait bool) {
	if rec == nil {
		return
	}
	ss.mu.Lock()
	ended := ss.ended
	ss.mu.Unlock()
	if ended {
		// The rest of the session arrived after the session moved on
		// again: it follows it there.
		s.passOnRecord(rec)
		return
	}
	// What the client was delivered through the previous nodes is not
	// delivered again, whichever way it reaches this one.
	s.remember(rec, seen)
	ss.mu.Lock()
	// Deliveries are held back while importing; the imported messages
	// themselves go through.
	held := ss.importing
	ss.importing = false
	var ops []StoreOp
	if ss.stored() && !ss.wasStored {
		ops = append(ops, ss.sessionOp(0))
	}
	if ss.arrived != nil {
		for _, d := range rec.Delivered {
			ss.arrived[d] = struct{}{}
		}
	}
	for i := range rec.Messages {
		ops = ss.importLocked(&rec.Messages[i], seen, ops)
	}
	for _, id := range rec.AwaitingRel {
		if _, ok := ss.awaitingRel[id]; ok {
			continue
		}
		if ss.awaitingRel == nil {
			ss.awaitingRel = make(map[uint16]struct{})
		}
		ss.awaitingRel[id] = struct{}{}
		if ss.stored() {
			ops = append(ops, StoreOp{Kind: OpAddRel, ClientID: ss.id, PacketID: id})
		}
	}
	ops = ss.orderQueueLocked(ops)
	ss.importing = held
	start := ss.conn
	if start != nil {
		ss.refill()
	}
	ss.mu.Unlock()
	s.commitOps(ops, wait)
	if start != nil {
		go start.flush()
	}
}

// releasePending ends the holding back of deliveries: those that came
// while the session was moving are placed, less the ones seen in the
// handed-over state.
func (s *Server) releasePending(ss *session, seen msgSet) {
	s.placePending(ss, seen, true)
}

// placePending places the deliveries held back while ss arrives and ends
// the holding back; with arrived, the session has arrived whole. Released
// early (not arrived), QoS 2 deliveries stay held until it has.
func (s *Server) placePending(ss *session, seen msgSet, arrived bool) {
	ss.mu.Lock()
	if arrived && ss.imported != nil {
		close(ss.imported)
		ss.imported = nil
	}
	ss.importing = false
	pending := ss.pending
	ss.pending = nil
	var ops, stale []StoreOp
	var start *conn
	for _, o := range pending {
		if !arrived && o.qos == 2 {
			// Released early, before the previous node answered: a QoS
			// 2 message it may have sent the client already waits for
			// its answer ([MQTT-4.3.3-2]: a duplicate is worse than the
			// wait; a QoS 1 one may come twice).
			ss.pending = append(ss.pending, o)
			continue
		}
		if o.seq != 0 {
			// Stored apart while held back: it takes its place in the
			// queue (a new sequence and packet id) in the same commit.
			stale = append(stale, StoreOp{Kind: OpDeleteMessage, ClientID: ss.id, Seq: o.seq})
			o.seq = 0
		}
		if seen.has(o.msg) {
			continue
		}
		// Should the rest of the move bring it too (it comes after
		// this, see finishLater), it is not delivered twice.
		seen.add(o.msg)
		var c *conn
		if ops, c = ss.deliverLocked(o, ops); c != nil {
			start = c
		}
	}
	ops = ss.orderQueueLocked(ops)
	ss.mu.Unlock()
	s.commitOps(append(ops, stale...), true)
	if start != nil {
		go start.flush()
	}
}

// commitOps commits ops, waiting for the store when wait is set.
func (s *Server) commitOps(ops []StoreOp, wait bool) {
	if len(ops) == 0 {
		return
	}
	if !wait {
		s.commit(ops, nil)
		return
	}
	done := make(chan struct{})
	s.commit(ops, func() { close(done) })
	<-done
}

// msgKey names a message across the cluster (Message.Node, Message.ID).
type msgKey = MessageRef

// arrivedWindow is how long a session that arrived from another node
// checks every delivery against those it already had: longer than a
// previous node passes messages on (the node's passOnTime).
const arrivedWindow = 45 * time.Second

// arrivedOnce reports whether m is new to a session that arrived lately,
// and remembers it; past arrivedWindow it stops checking. Caller holds
// ss.mu.
func (ss *session) arrivedOnce(m *Message) bool {
	if time.Now().After(ss.arrivedUntil) {
		ss.arrived = nil
		return true
	}
	if m.ID == 0 {
		return true
	}
	k := msgKey{m.Node, m.ID}
	if _, dup := ss.arrived[k]; dup {
		return false
	}
	ss.arrived[k] = struct{}{}
	return true
}

type msgSet map[msgKey]struct{}

// has reports whether m was seen; messages without an id never were.
func (m msgSet) has(msg *Message) bool {
	if msg.ID == 0 {
		return false
	}
	_, ok := m[msgKey{msg.Node, msg.ID}]
	return ok
}

// importLocked adds one handed-over message to the session, unless an equal
// one came before. Messages that were in flight keep their packet ids and
// are resent with DUP; the others are queued as new. Caller holds mu.
func (ss *session) importLocked(sm *StoredMessage, seen msgSet, ops []StoreOp) []StoreOp {
	m := sm.Msg
	if seen.has(m) {
		return ops
	}
	if m.ID != 0 {
		seen[msgKey{m.Node, m.ID}] = struct{}{}
	}
	o := outMsg{msg: m, qos: sm.QoS, retain: sm.Retain, subIDs: sm.SubIDs}
	if sm.ShareGroup != "" {
		o.share = ss.srv.shares.ref(shareRef{filter: sm.ShareFilter, group: sm.ShareGroup})
	}
	if sm.PacketID == 0 {
		ops, _ = ss.deliverLocked(o, ops) // the caller starts the writer
		return ops
	}
	// In flight: placed here directly, not through prepareLocked. One this
	// session already had since it arrived (a later part of the move, or a
	// node it passed through, repeating it) is not placed twice: its flow
	// may have ended here, and a QoS 2 message goes once ([MQTT-4.3.3-2]).
	if ss.arrived != nil && m.ID != 0 {
		k := msgKey{m.Node, m.ID}
		if _, dup := ss.arrived[k]; dup {
			return ops
		}
		ss.arrived[k] = struct{}{}
	}
	ss.markID(sm.PacketID)
	o.packetID, o.dup = sm.PacketID, true
	if ss.stored() {
		ss.nextSeq++
		o.seq = ss.nextSeq
	}
	if sm.Released {
		o.state = stateRel
		ss.inflight = append(ss.inflight, o)
		if c := ss.conn; c != nil {
			// Imported after the connection was attached: resume has
			// passed, so the PUBREL goes now.
			c.enqueueAck(packet.PUBREL, o.packetID, packet.Success)
		}
	} else {
		ss.queue.push(o)
	}
	if o.seq != 0 {
		ops = append(ops, StoreOp{Kind: OpPutMessage, ClientID: ss.id, Message: o.record()})
	}
	return ops
}
