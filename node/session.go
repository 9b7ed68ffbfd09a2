package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/store"
	"github.com/mqcluster/mqcluster/broker/topic"
	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
	"github.com/mqcluster/mqcluster/transport"
)

// The node moves sessions between brokers and keeps their wills.
var _ broker.SessionCluster = (*Node)(nil)

// ClaimSession records this node as the owner of the client's session and
// takes the session over from the node that held it (broker.SessionCluster).
//
// A persistent session, or one the cluster already knows, is claimed
// through Raft with a new epoch, which fences the previous owner. The
// previous owner, when alive, closes the client's connection and hands the
// session over in two steps (see pb.TakeOverRequest.finish); when it
// cannot be reached, the subscriptions the cluster recorded for the session
// are what moves. An ephemeral session is not registered: a connection of
// the same client id on another node is closed, without waiting.
func (n *Node) ClaimSession(ctx context.Context, req broker.SessionClaim) (*broker.SessionTransfer, error) {
	cur, known := n.fsm.Session(req.ClientID)
	if !req.Persistent && !known {
		n.kickElsewhere(req.ClientID)
		return nil, nil
	}
	// The cluster's record of an offline session can outlive the session
	// by the time its node takes to record the end: past its expiry
	// nothing of it is resumed (the server discards the session state once
	// the interval has passed, [MQTT-4.1.0-2]), and session present is 0.
	// This replica may lag behind the log (the release of the session, or
	// its subscriptions, not applied yet): read it once caught up.
	if err := n.waitCommitted(ctx); err != nil {
		return nil, fmt.Errorf("claim session %q: %w", req.ClientID, err)
	}
	cur, known = n.fsm.Session(req.ClientID)
	expired := known && sessionExpired(cur, time.Now())
	if !req.CleanStart && (!known || expired) {
		// A session to resume that this replica does not have, or has as
		// expired: it may be behind the cluster without knowing it (back
		// from a partition, the index its leader last reported is old).
		// Read again after an entry of its own has gone through the log.
		if err := n.barrier(ctx); err != nil {
			return nil, fmt.Errorf("claim session %q: %w", req.ClientID, err)
		}
		cur, known = n.fsm.Session(req.ClientID)
		expired = known && sessionExpired(cur, time.Now())
	}
	if expired {
		req.CleanStart = true
	}
	var expiry uint32
	if req.Persistent {
		expiry = req.Expiry
	}
	epoch := n.fsm.NextEpoch()
	var idx uint64
	for attempt := 0; ; attempt++ {
		cmd, err := fsm.Encode(&pb.Command{Op: &pb.Command_SessionClaim{SessionClaim: &pb.SessionClaim{
			ClientId: req.ClientID, NodeId: n.cfg.NodeID, Epoch: epoch, ExpirySeconds: expiry, CleanStart: req.CleanStart,
			ClaimedAtUnixMs: time.Now().UnixMilli()}}})
		if err != nil {
			return nil, err
		}
		idx, err = n.Propose(ctx, cmd)
		if err == nil {
			n.live.put(req.ClientID, epoch)
			break
		}
		// A concurrent claim took the epoch (or this replica lags behind
		// the leader): claim the next one.
		if attempt < 10 && (errors.Is(err, ErrRejected) || errors.Is(err, fsm.ErrStaleEpoch)) && ctx.Err() == nil {
			// This replica lags (a restart, a slow link): the session as
			// read above may be gone from here already (the move that
			// took it away not applied yet), and the claim would find no
			// session to take over. Catch up through an entry of its own
			// and read it again before drawing the next epoch.
			if err := n.barrier(ctx); err != nil {
				return nil, fmt.Errorf("claim session %q: %w", req.ClientID, err)
			}
			cur, known = n.fsm.Session(req.ClientID)
			if known && sessionExpired(cur, time.Now()) {
				expired, req.CleanStart = true, true
			}
			epoch = max(n.fsm.NextEpoch(), epoch+1)
			continue
		}
		return nil, fmt.Errorf("claim session %q: %w", req.ClientID, err)
	}
	tr := &broker.SessionTransfer{Epoch: epoch}
	// The session as the claim found it: this replica may not have applied
	// the subscriptions the previous owner recorded when it read cur.
	if err := n.fsm.WaitApplied(ctx, idx); err != nil {
		return nil, fmt.Errorf("claim session %q: %w", req.ClientID, err)
	}
	if expired {
		n.kickElsewhere(req.ClientID)
		return tr, nil
	}
	var holders []string // after this claim
	if s, ok := n.fsm.Session(req.ClientID); ok && s.Epoch == epoch {
		cur.Subscriptions = s.Subscriptions
		holders = s.Holders
	}
	// The queue waits for holders other than from (whose messages come
	// with the second step of the move) that are down.
	hold := func(from string) bool { return !req.CleanStart && n.holdWorthy(holders, from) }
	if !known {
		// No session to resume anywhere: a copy of one held here is
		// stale (the session expired, [MQTT-4.1.0-2], or ended where it
		// lived), and the client starts anew with session present 0.
		tr.Discard = true
		n.kickElsewhere(req.ClientID)
		return tr, nil
	}
	recorded := func() {
		if !req.CleanStart && len(cur.Subscriptions) > 0 {
			tr.Record = &broker.SessionRecord{ClientID: req.ClientID, Subscriptions: brokerSubscriptions(cur.Subscriptions)}
		}
	}
	from := cur.Owner // the node the session comes from
	var addr string
	finish := func(ctx context.Context) (*broker.SessionRecord, error) {
		state, err := n.tr.TakeOver(ctx, addr, &pb.TakeOverRequest{ClientId: req.ClientID, NewOwner: n.cfg.NodeID, Epoch: epoch, Finish: true})
		if err != nil && n.outOfReach(from) {
			// Waiting for it would hold the session's deliveries back
			// until it is back; it hands on what it holds then.
			return nil, fmt.Errorf("%w: %s: %v", broker.ErrPreviousNodeDown, from, err)
		}
		if err != nil || len(state) == 0 {
			return nil, err
		}
		rec, err := store.DecodeTransfer(state)
		if err != nil {
			return nil, err
		}
		n.ackFinish(addr, req.ClientID, epoch)
		n.localize(rec, from)
		return rec, nil
	}
	step1 := &pb.TakeOverRequest{ClientId: req.ClientID, NewOwner: n.cfg.NodeID, Epoch: epoch}
	var state []byte
	var err error
	if from == n.cfg.NodeID {
		if b := n.brk.Load(); req.CleanStart || b == nil || b.HasSession(req.ClientID) {
			tr.Hold = hold("")
			return tr, nil
		}
		// The cluster names this node, which holds nothing: an earlier
		// claim of its own was committed after it had given up on that
		// connection (a slow link to the leader), and the session is
		// still where it was before. Ask the other nodes.
		peer, peerAddr, st := n.findSession(ctx, step1, from)
		if st == nil {
			recorded()
			tr.Hold = hold("")
			return tr, nil
		}
		from, addr, state = peer, peerAddr, st
	} else {
		addr = n.peerAddr(from)
		if from == "" || addr == "" {
			recorded()
			tr.Hold = hold("")
			return tr, nil
		}
		state, err = n.tr.TakeOver(ctx, addr, step1)
		if err == nil && len(state) == 0 && !req.CleanStart {
			// The recorded owner holds no such session: its claim was
			// committed after it had given up on the connection (a slow
			// link), and the session is still where it was before. Ask
			// the other nodes.
			peer, peerAddr, st := n.findSession(ctx, step1, from)
			if st != nil {
				from, addr, state = peer, peerAddr, st
			} else if b := n.brk.Load(); b != nil && b.HasSession(req.ClientID) {
				// No other node has it either: it never left this node
				// (the client gave up on a connection elsewhere whose
				// claim went through late). It resumes here whole.
				tr.Hold = hold(from)
				return tr, nil
			}
		}
	}
	if err != nil || len(state) == 0 {
		if err != nil {
			n.log.Warn("session not handed over by its previous node; taking its recorded subscriptions",
				"client_id", req.ClientID, "previous", cur.Owner, "err", err)
			// It may have handed it over all the same (the answer was
			// lost): the second step brings the whole session.
			tr.Finish = finish
			tr.Hold = hold(from)
		} else {
			// The recorded owner holds nothing of it (it says so).
			tr.Hold = hold(from)
		}
		recorded()
		return tr, nil
	}
	rec, err := store.DecodeTransfer(state)
	if err != nil {
		n.log.Warn("bad session state from the previous node", "client_id", req.ClientID, "previous", from, "err", err)
		recorded()
		tr.Finish = finish
		tr.Hold = hold(from)
		return tr, nil
	}
	n.localize(rec, from)
	tr.Record = rec
	tr.Finish = finish
	tr.Hold = hold(from)
	return tr, nil
}

// ackFinish tells the node at addr, in the background, that this node has
// its answer to the second step of the move of clientID's session to
// epoch (finishedMoves).
func (n *Node) ackFinish(addr, clientID string, epoch uint64) {
	if ackFinishLoss.Load() {
		return // tests: the acknowledgement never arrives
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := n.tr.TakeOver(ctx, addr, &pb.TakeOverRequest{ClientId: clientID, NewOwner: n.cfg.NodeID, Epoch: epoch, Finish: true, Ack: true})
			cancel()
			if err == nil {
				return
			}
			select {
			case <-n.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// findSession asks the live nodes other than this one and skip, one at a
// time, to hand over the session of req's client (the first step of a
// move), and returns the first that had it.
func (n *Node) findSession(ctx context.Context, req *pb.TakeOverRequest, skip string) (string, string, []byte) {
	for _, m := range n.members() {
		if m.id == n.cfg.NodeID || m.id == skip || m.grpc == "" {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		state, err := n.tr.TakeOver(tctx, m.grpc, req)
		cancel()
		if err == nil && len(state) > 0 {
			n.log.Info("session found on a node other than its recorded owner", "client_id", req.GetClientId(),
				"node", m.id, "recorded_owner", skip)
			return m.id, m.grpc, state
		}
	}
	return "", "", nil
}

// sessionExpired reports whether the offline session s has outlived its
// expiry interval at now.
func sessionExpired(s fsm.Session, now time.Time) bool {
	if s.Connected || s.DisconnectedAtUnixMs == 0 || s.ExpirySeconds == ^uint32(0) {
		return false
	}
	return now.UnixMilli() >= s.DisconnectedAtUnixMs+int64(s.ExpirySeconds)*1000
}

// kickElsewhere closes a connection of clientID on every other node, in
// the background ([MQTT-3.1.4-3] across the cluster): an order on each
// peer's forwarding stream, batched with the messages.
func (n *Node) kickElsewhere(clientID string) {
	fm := &pb.ForwardedMessage{KickClientId: clientID}
	for _, peer := range n.peerIDs() {
		n.tr.Send(peer, fm, func(error) {})
	}
}

// peerAddr is the transport address of a live member ("" when unknown).
func (n *Node) peerAddr(id string) string {
	for _, m := range n.members() {
		if m.id == id {
			return m.grpc
		}
	}
	return ""
}

// localize rewrites the node names of a handed-over session's messages,
// and of those it was delivered, from the sender's point of view to this
// node's: "" means the node that received the message from its publisher.
func (n *Node) localize(rec *broker.SessionRecord, from string) {
	local := func(node string) string {
		switch node {
		case "":
			return from
		case n.cfg.NodeID:
			return ""
		}
		return node
	}
	for i := range rec.Messages {
		m := rec.Messages[i].Msg
		m.Node = local(m.Node)
	}
	for i := range rec.Delivered {
		rec.Delivered[i].Node = local(rec.Delivered[i].Node)
	}
}

// finishDelay and firstStepDelay hold back the answers to the steps of a
// move, refuseTakeOver makes takeovers fail as if the node could not be
// reached, and ackFinishLoss loses the acknowledgements of second steps
// (tests).
var (
	finishDelay     atomic.Int64 // a time.Duration
	firstStepDelay  atomic.Int64 // a time.Duration
	refuseTakeOver  atomic.Bool
	refuseFirstStep atomic.Bool // the first step only
	ackFinishLoss   atomic.Bool
)

// sessions serves session takeovers from other nodes.
type sessions struct{ n *Node }

func (s sessions) TakeOver(ctx context.Context, req *pb.TakeOverRequest) ([]byte, error) {
	b := s.n.brk.Load()
	if b == nil {
		return nil, fmt.Errorf("%w: %v", transport.ErrNotFound, errNoBroker)
	}
	id := req.GetClientId()
	if d := time.Duration(firstStepDelay.Load()); d > 0 && !req.GetFinish() {
		time.Sleep(d) // tests: a previous owner slow to answer the first step
	}
	if refuseTakeOver.Load() || refuseFirstStep.Load() && !req.GetFinish() {
		return nil, fmt.Errorf("%w: refused (test)", transport.ErrNotFound)
	}
	if req.GetEpoch() == 0 {
		b.Kick(id)
		return nil, nil
	}
	if req.GetFinish() && req.GetAck() {
		s.n.finished.ack(id, req.GetEpoch())
		return nil, nil
	}
	// A stale first step is refused; the second step of a move this node
	// began is served whatever was claimed since: the session left here
	// for req's node, and what it collected meanwhile follows it there (and
	// on from there).
	if cur, ok := s.n.fsm.Session(id); ok && cur.Epoch > req.GetEpoch() && !req.GetFinish() {
		return nil, fmt.Errorf("%w: take over of %q at epoch %d, session epoch %d", transport.ErrRejected, id, req.GetEpoch(), cur.Epoch)
	}
	if req.GetFinish() {
		if d := time.Duration(finishDelay.Load()); d > 0 {
			time.Sleep(d) // tests: a previous owner slow to answer
		}
		return s.n.finished.finish(id, req.GetEpoch(), func() ([]byte, error) {
			s.n.awaitMovedRoutes(ctx, id, req.GetNewOwner(), req.GetEpoch())
			if cur, ok := s.n.fsm.Session(id); ok && cur.Epoch == req.GetEpoch() && cur.Owner == req.GetNewOwner() &&
				cur.Owner != s.n.cfg.NodeID {
				// The first step may never have reached this node (it was
				// cut off then): what it holds of the session goes with
				// this answer, to the owner the cluster records.
				b.HandOver(id, req.GetNewOwner())
			}
			rec, err := b.FinishHandOverTo(id, req.GetNewOwner(), passOnTime)
			if err == nil {
				// What this node held of the session goes to the new
				// owner with this answer.
				s.n.handedOn(id)
			}
			if err != nil || rec == nil {
				return nil, err
			}
			s.n.dropCopies(b, rec)
			s.n.globalize(rec)
			return store.AppendTransfer(nil, rec), nil
		})
	}
	rec, ok := b.HandOver(id, req.GetNewOwner())
	if !ok {
		return nil, nil
	}
	s.n.dropCopies(b, rec)
	s.n.globalize(rec)
	return store.AppendTransfer(nil, rec), nil
}

// globalize names this node in the messages of a session record that it
// received from their publishers, and in those the session was delivered,
// on copies: the broker's messages are shared and never modified.
func (n *Node) globalize(rec *broker.SessionRecord) {
	for i := range rec.Messages {
		if m := rec.Messages[i].Msg; m.Node == "" && m.ID != 0 {
			c := *m
			c.Node = n.cfg.NodeID
			rec.Messages[i].Msg = &c
		}
	}
	for i := range rec.Delivered {
		if rec.Delivered[i].Node == "" {
			rec.Delivered[i].Node = n.cfg.NodeID
		}
	}
}

// brokerSubscriptions converts recorded subscriptions to the broker's form.
func brokerSubscriptions(in []fsm.Subscription) []broker.Subscription {
	out := make([]broker.Subscription, 0, len(in))
	for _, s := range in {
		group, real, _, err := topic.ParseShare(s.Filter)
		if err != nil {
			continue
		}
		out = append(out, broker.Subscription{Filter: s.Filter, Group: group, Real: real, SubID: s.SubscriptionID,
			Opts: packet.SubOptions{QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling}})
	}
	return out
}

// ReleaseSession records that a persistent session's connection closed.
func (n *Node) ReleaseSession(clientID string, epoch uint64, expiry uint32) {
	n.releasing.put(clientID, epoch)
	n.ops.add("s/"+clientID, &pb.Command{Op: &pb.Command_SessionRelease{SessionRelease: &pb.SessionRelease{
		ClientId: clientID, Epoch: epoch, DisconnectedAtUnixMs: time.Now().UnixMilli(), ExpirySeconds: &expiry}}})
}

// EndSession records that a claimed session ended on this node.
func (n *Node) EndSession(clientID string, epoch uint64) {
	n.ended.put(clientID, epoch)
	n.ops.add("s/"+clientID, &pb.Command{Op: &pb.Command_SessionDelete{SessionDelete: &pb.SessionDelete{
		ClientId: clientID, Epoch: epoch}}})
}

// SessionLivesOn reports whether the cluster records the session of
// clientID, claimed here as epoch, as alive past the expiry the broker
// counted, or may (this node has not caught up with the leader): under a later claim of another node that has not expired, or
// under this very claim with the release this node proposed not committed
// yet (it waits for a quorum, opRetryFor at most; until then the cluster
// would resume the session for a client that comes back, which must find
// its messages).
// It tells the broker to look again within foreignGrace, or at the
// session's expiry when that comes first.
func (n *Node) SessionLivesOn(clientID string, epoch uint64) (time.Duration, bool) {
	if !n.inContact() || !n.caughtUp() {
		// Cut off from the leader, or behind it: the cluster may have
		// given the session to another node since (a client back on the
		// other side of a partition), which this node learns only once
		// it has caught up (13 messages lost in a partition run when an
		// isolated node expired its copy).
		return time.Second, true
	}
	s, ok := n.fsm.Session(clientID)
	now := time.Now()
	switch {
	case !ok || s.Epoch < epoch || sessionExpired(s, now):
		return 0, false
	case s.Epoch == epoch:
		if s.Owner != n.cfg.NodeID || !s.Connected || !hasEpoch(&n.releasing, clientID, epoch) {
			return 0, false
		}
		return time.Second, true
	case s.Owner == "" || s.Owner == n.cfg.NodeID:
		return 0, false
	}
	again := foreignGrace
	if !s.Connected && s.DisconnectedAtUnixMs != 0 && s.ExpirySeconds != ^uint32(0) {
		end := time.UnixMilli(s.DisconnectedAtUnixMs + int64(s.ExpirySeconds)*1000)
		again = min(again, end.Sub(now))
	}
	return max(again, 100*time.Millisecond), true
}

// SetSubscriptions records the subscriptions of a persistent session, so
// that they move with it even when this node dies.
func (n *Node) SetSubscriptions(clientID string, epoch uint64, subs []broker.Subscription) {
	ps := make([]*pb.Subscription, len(subs))
	for i, s := range subs {
		ps[i] = &pb.Subscription{Filter: s.Filter, Qos: uint32(s.Opts.QoS), NoLocal: s.Opts.NoLocal,
			RetainAsPublished: s.Opts.RetainAsPublished, RetainHandling: uint32(s.Opts.RetainHandling), SubscriptionId: s.SubID}
	}
	n.ops.add("u/"+clientID, &pb.Command{Op: &pb.Command_SessionSubscriptions{SessionSubscriptions: &pb.SessionSubscriptions{
		ClientId: clientID, Epoch: epoch, Subscriptions: ps}}})
}

// SetWill registers a connection's will; its id names this run of the node
// so that the wills of an earlier run are known to be orphans.
func (n *Node) SetWill(w broker.WillRecord) string {
	id := fmt.Sprintf("%s/%s/%d", n.cfg.NodeID, n.incarnation, n.willSeq.Add(1))
	m := w.Message
	props, err := packet.AppendMessageProperties(nil, &m.Props)
	if err != nil {
		n.log.Warn("will not registered in the cluster", "client_id", w.ClientID, "err", err)
		return ""
	}
	n.willsMu.Lock()
	n.wills[id] = willWanted
	n.willsMu.Unlock()
	n.ops.add("w/"+id, &pb.Command{Op: &pb.Command_WillSet{WillSet: &pb.WillSet{
		WillId: id, ClientId: w.ClientID, NodeId: n.cfg.NodeID, DelaySeconds: w.Delay, SessionExpirySeconds: w.SessionExpiry,
		Topic: m.Topic, Payload: m.Payload, Qos: uint32(m.QoS), Retain: m.Retain, Properties: props}}})
	return id
}

// ClearWill drops a will's record.
func (n *Node) ClearWill(id string) {
	n.willsMu.Lock()
	delete(n.wills, id)
	n.willsMu.Unlock()
	n.ops.add("w/"+id, &pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: id}}})
}

// finishedMoves keeps the answer to the second step of each move until
// the new owner acknowledges it, or wait passes and it is handed on: when
// it is lost on the way (the new owner gave up waiting), the retry gets
// the same session, which this node has already ended.
type finishedMoves struct {
	mu sync.Mutex
	m  map[string]*finishedMove
	// unacked is called with an answer no one acknowledged within wait
	// (keepUnacked; Node.handOnUnacked).
	unacked func(id string, state []byte)
	wait    time.Duration
}

type finishedMove struct {
	epoch uint64
	state []byte
	timer *time.Timer
}

// keepUnacked is how long an answer waits for the new owner's
// acknowledgement before it goes to the session's owner as a hand-on: past
// the new owner's own retries of a slow attempt (each up to 10 s).
const keepUnacked = 30 * time.Second

// finish answers the second step of the move of session id to the claim
// epoch: with end's answer, once; a retry (the first answer lost on its
// way) gets the same answer again until the new owner acknowledges it.
func (f *finishedMoves) finish(id string, epoch uint64, end func() ([]byte, error)) ([]byte, error) {
	f.mu.Lock()
	if v, ok := f.m[id]; ok && v.epoch == epoch {
		f.mu.Unlock()
		return v.state, nil
	}
	f.mu.Unlock()
	state, err := end()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", transport.ErrRejected, err)
	}
	if state != nil {
		f.mu.Lock()
		if f.m == nil {
			f.m = map[string]*finishedMove{}
		}
		fm := &finishedMove{epoch: epoch, state: state}
		fm.timer = time.AfterFunc(f.wait, func() { f.expire(id, fm) })
		if old := f.m[id]; old != nil && old.timer != nil {
			old.timer.Stop()
		}
		f.m[id] = fm
		f.mu.Unlock()
	}
	return state, nil
}

// ack drops the answer for session id's move to epoch: the new owner has
// it.
func (f *finishedMoves) ack(id string, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.m[id]; ok && v.epoch == epoch {
		if v.timer != nil {
			v.timer.Stop()
		}
		delete(f.m, id)
	}
}

// expire hands on fm, an answer no one acknowledged: a retry from here on
// finds nothing, so that the messages reach the session once.
func (f *finishedMoves) expire(id string, fm *finishedMove) {
	f.mu.Lock()
	if f.m[id] != fm {
		f.mu.Unlock()
		return
	}
	delete(f.m, id)
	unacked := f.unacked
	f.mu.Unlock()
	if unacked != nil {
		unacked(id, fm.state)
	}
}

// handOnUnacked hands on to the owner the cluster records the messages of
// an answer to the second step of a move that its new owner never
// acknowledged: that node died, or gave up on a slow link, with the answer
// on its way, and the messages exist only here (the queue of a session
// moving from a node behind a slow link, lost in a jepsen-lite run when
// both steps' answers went missing).
func (n *Node) handOnUnacked(id string, state []byte) {
	select {
	case <-n.stop:
		return
	default:
	}
	b := n.brk.Load()
	rec, err := store.DecodeTransfer(state)
	if b == nil || err != nil {
		return
	}
	ds, _ := broker.HandOnDeliveries(rec)
	s, ok := n.fsm.Session(id)
	if len(ds) == 0 {
		return
	}
	if !ok || s.Owner == "" {
		b.Stats().PassOnFailures.Add(int64(len(ds)))
		n.log.Warn("unacknowledged answer of a move dropped: the cluster records no owner", "client_id", id, "messages", len(ds))
		return
	}
	n.log.Warn("answer of a move not acknowledged by its new owner; its messages go to the session's owner",
		"client_id", id, "owner", s.Owner, "messages", len(ds))
	n.sendOn(b, id, s.Owner, ds, 0, nil)
}

// Will registration states (Node.wills).
const (
	willWanted    = 1 << iota // registered by the broker, not cleared
	willCommitted             // its WillSet is committed
)

// willInCluster reports whether the registration of will id is committed:
// the cluster may publish it for this node.
func (n *Node) willInCluster(id string) bool {
	if id == "" {
		return false
	}
	n.willsMu.Lock()
	defer n.willsMu.Unlock()
	return n.wills[id]&willCommitted != 0
}

func (n *Node) willCommitted(id string) {
	n.willsMu.Lock()
	if v, ok := n.wills[id]; ok {
		n.wills[id] = v | willCommitted
	}
	n.willsMu.Unlock()
}

// ClaimWill lets the broker publish a will only when it takes it from the
// cluster first (broker.SessionCluster): the leader may have taken it, for
// a node it took for dead (a partition, a pause). A will that was never
// registered here is this node's alone. One whose registration was
// proposed but not seen committed may be in the cluster all the same (a
// proposal that timed out on a leader that had replicated it): it is
// claimed too, and published unless the cluster says it published it
// (fsm.ErrWillFired); "no such will" means it never landed, and the
// registration is dropped should it land later. The claim is retried
// while there is no leader; it is never given up on, since the will stays
// in the cluster until someone publishes it.
func (n *Node) ClaimWill(id string, publish func(ok bool)) {
	n.willsMu.Lock()
	state, known := n.wills[id]
	delete(n.wills, id)
	n.willsMu.Unlock()
	committed := state&willCommitted != 0
	if !committed {
		// Drop the registration if it lands (after the claim, or
		// coalesced with it while neither was proposed).
		n.ops.add("w/"+id, &pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: id}}})
	}
	if !known {
		publish(true)
		return
	}
	cmd, err := fsm.Encode(&pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: id, Fire: true}}})
	if err != nil {
		publish(false)
		return
	}
	go func() {
		wait := 100 * time.Millisecond
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := n.Propose(ctx, cmd)
			cancel()
			switch {
			case err == nil:
				publish(true)
				return
			case !committed && rejectedFor(err, fsm.ErrNoWill):
				publish(true) // its registration never landed
				return
			case errors.Is(err, ErrRejected) || isRejection(err):
				n.log.Info("will already published by the cluster", "will", id)
				publish(false)
				return
			}
			select {
			case <-n.stop:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
		}
	}()
}

// keepEnded is how long a node remembers the claims whose sessions ended
// on it (expired, or discarded by a clean start; Node.ended): the cluster
// may not have recorded the end yet (no leader, a slow link), and this
// node must not install such a session again for messages handed on to
// it.
const keepEnded = 10 * time.Minute
