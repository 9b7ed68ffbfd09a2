package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/mqcluster/mqcluster/broker"
)

// encoded is the ops of one Commit, encoded in the caller's goroutine: the
// committer only copies bytes into bbolt.
type encoded struct {
	ops []encodedOp
	buf []byte // keys and values of ops
}

// span is a part of encoded.buf.
type span struct{ lo, hi int }

// encodedOp is one op with its keys and value.
type encodedOp struct {
	kind broker.StoreOpKind
	sess span // session bucket key (session ops)
	key  span // seq, packet id or topic key
	val  span // record, for puts
	// seq and id name the op in errors.
	seq uint64
	id  string
}

func (e *encoded) bytes(s span) []byte { return e.buf[s.lo:s.hi:s.hi] }

// mark returns the span from lo to the end of buf.
func (e *encoded) mark(lo int) span { return span{lo, len(e.buf)} }

// maxPooledBuf is the largest buffer kept for reuse; bigger ones (large
// payloads) go to the garbage collector.
const maxPooledBuf = 64 << 10

var encodedPool = sync.Pool{New: func() any { return new(encoded) }}

func (e *encoded) release() {
	if e == nil || cap(e.buf) > maxPooledBuf {
		return
	}
	clear(e.ops) // drop the client id strings
	e.ops, e.buf = e.ops[:0], e.buf[:0]
	encodedPool.Put(e)
}

// encode validates and encodes ops. On error nothing is returned: a Commit
// is applied whole or not at all.
func encode(ops []broker.StoreOp) (*encoded, error) {
	e := encodedPool.Get().(*encoded)
	for i := range ops {
		if err := e.add(&ops[i]); err != nil {
			e.release()
			return nil, fmt.Errorf("%w: op %d of %d (kind %d): %v", ErrInvalidOp, i, len(ops), ops[i].Kind, err)
		}
	}
	return e, nil
}

// add encodes one op, or says what is wrong with it.
func (e *encoded) add(op *broker.StoreOp) error {
	o := encodedOp{kind: op.Kind, id: op.ClientID}
	sessKey := func(id string) {
		lo := len(e.buf)
		e.buf = appendKey(e.buf, id)
		o.sess = e.mark(lo)
	}
	switch op.Kind {
	case broker.OpPutSession:
		if op.Session == nil {
			return errors.New("no Session")
		}
		id := op.ClientID
		switch {
		case id == "":
			id = op.Session.ClientID
		case op.Session.ClientID != "" && op.Session.ClientID != id:
			return fmt.Errorf("ClientID %q and Session.ClientID %q differ", id, op.Session.ClientID)
		}
		for i := range op.Session.Subscriptions {
			if so := op.Session.Subscriptions[i].Opts; so.QoS > 2 || so.RetainHandling > 2 {
				return fmt.Errorf("subscription %d: QoS %d, retain handling %d", i, so.QoS, so.RetainHandling)
			}
		}
		o.id = id
		sessKey(id)
		lo := len(e.buf)
		e.buf = appendSession(e.buf, id, op.Session)
		o.val = e.mark(lo)
	case broker.OpDeleteSession:
		sessKey(op.ClientID)
	case broker.OpPutMessage:
		m := op.Message
		switch {
		case m == nil:
			return errors.New("no Message")
		case m.Msg == nil:
			return errors.New("no Message.Msg")
		case m.QoS > 2 || m.Msg.QoS > 2:
			return fmt.Errorf("QoS %d, message QoS %d", m.QoS, m.Msg.QoS)
		}
		o.seq = m.Seq
		sessKey(op.ClientID)
		lo := len(e.buf)
		e.buf = binary.BigEndian.AppendUint64(e.buf, m.Seq)
		o.key = e.mark(lo)
		lo = len(e.buf)
		e.buf = appendStored(e.buf, m)
		o.val = e.mark(lo)
	case broker.OpDeleteMessage, broker.OpReleaseMessage:
		o.seq = op.Seq
		sessKey(op.ClientID)
		lo := len(e.buf)
		e.buf = binary.BigEndian.AppendUint64(e.buf, op.Seq)
		o.key = e.mark(lo)
	case broker.OpAddRel, broker.OpClearRel:
		sessKey(op.ClientID)
		lo := len(e.buf)
		e.buf = binary.BigEndian.AppendUint16(e.buf, op.PacketID)
		o.key = e.mark(lo)
		o.val = span{o.key.hi, o.key.hi} // empty
	case broker.OpPutRetained:
		m := op.Retained
		switch {
		case m == nil:
			return errors.New("no Retained")
		case m.QoS > 2:
			return fmt.Errorf("QoS %d", m.QoS)
		}
		lo := len(e.buf)
		e.buf = appendKey(e.buf, m.Topic)
		o.key = e.mark(lo)
		lo = len(e.buf)
		e.buf = appendRetained(e.buf, m)
		o.val = e.mark(lo)
	case broker.OpDeleteRetained:
		lo := len(e.buf)
		e.buf = appendKey(e.buf, op.Topic)
		o.key = e.mark(lo)
	default:
		return errors.New("unknown kind")
	}
	e.ops = append(e.ops, o)
	return nil
}

// txn is the state of one read-write transaction.
type txn struct {
	sessions, retained *bolt.Bucket
}

// applyFuncs applies one op kind. Each sets state (puts or deletes a key),
// so applying an op twice is the same as applying it once.
var applyFuncs = [...]func(t *txn, e *encoded, o *encodedOp) error{
	broker.OpPutSession:     applyPutSession,
	broker.OpDeleteSession:  applyDeleteSession,
	broker.OpPutMessage:     applyPutMessage,
	broker.OpDeleteMessage:  applyDeleteMessage,
	broker.OpReleaseMessage: applyReleaseMessage,
	broker.OpAddRel:         applyAddRel,
	broker.OpClearRel:       applyClearRel,
	broker.OpPutRetained:    applyPutRetained,
	broker.OpDeleteRetained: applyDeleteRetained,
}

func (t *txn) apply(e *encoded, o *encodedOp) error {
	// encode accepted only kinds with an entry.
	return applyFuncs[o.kind](t, e, o)
}

// session returns the bucket of a stored session, nil when the session is
// not stored: ops on it are then ignored.
func (t *txn) session(e *encoded, o *encodedOp) *bolt.Bucket {
	return t.sessions.Bucket(e.bytes(o.sess))
}

// applyPutSession writes the record, creating the session, and keeps its
// messages and released ids.
func applyPutSession(t *txn, e *encoded, o *encodedOp) error {
	b, err := t.sessions.CreateBucketIfNotExists(e.bytes(o.sess))
	if err != nil {
		return fmt.Errorf("session %q: %w", o.id, err)
	}
	if err := b.Put(keyRec, e.bytes(o.val)); err != nil {
		return fmt.Errorf("session %q: %w", o.id, err)
	}
	return nil
}

func applyDeleteSession(t *txn, e *encoded, o *encodedOp) error {
	if t.session(e, o) == nil {
		return nil
	}
	if err := t.sessions.DeleteBucket(e.bytes(o.sess)); err != nil {
		return fmt.Errorf("delete session %q: %w", o.id, err)
	}
	return nil
}

func applyPutMessage(t *txn, e *encoded, o *encodedOp) error {
	sb := t.session(e, o)
	if sb == nil {
		return nil
	}
	b, err := sb.CreateBucketIfNotExists(bucketMsgs)
	if err == nil {
		err = b.Put(e.bytes(o.key), e.bytes(o.val))
	}
	if err != nil {
		return fmt.Errorf("session %q message seq %d: %w", o.id, o.seq, err)
	}
	return nil
}

// msgs returns the message bucket of a stored session, or nil.
func (t *txn) msgs(e *encoded, o *encodedOp) *bolt.Bucket {
	if sb := t.session(e, o); sb != nil {
		return sb.Bucket(bucketMsgs)
	}
	return nil
}

func applyDeleteMessage(t *txn, e *encoded, o *encodedOp) error {
	b := t.msgs(e, o)
	if b == nil {
		return nil
	}
	if err := b.Delete(e.bytes(o.key)); err != nil {
		return fmt.Errorf("session %q delete message seq %d: %w", o.id, o.seq, err)
	}
	return nil
}

// applyReleaseMessage sets the Released flag, at a fixed offset of the
// record, of a stored message; a message that is not stored is ignored.
func applyReleaseMessage(t *txn, e *encoded, o *encodedOp) error {
	b := t.msgs(e, o)
	if b == nil {
		return nil
	}
	v := b.Get(e.bytes(o.key))
	switch {
	case v == nil:
		return nil
	case len(v) < 2 || v[0] != recordV1:
		return fmt.Errorf("%w: session %q message seq %d: bad header %x", ErrCorrupt, o.id, o.seq, v[:min(len(v), 2)])
	case v[1]&smReleased != 0:
		return nil
	}
	nv := append([]byte(nil), v...) // v is bbolt's, read-only
	nv[1] |= smReleased
	if err := b.Put(e.bytes(o.key), nv); err != nil {
		return fmt.Errorf("session %q release message seq %d: %w", o.id, o.seq, err)
	}
	return nil
}

func applyAddRel(t *txn, e *encoded, o *encodedOp) error {
	sb := t.session(e, o)
	if sb == nil {
		return nil
	}
	b, err := sb.CreateBucketIfNotExists(bucketRel)
	if err == nil {
		err = b.Put(e.bytes(o.key), e.bytes(o.val))
	}
	if err != nil {
		return fmt.Errorf("session %q add rel: %w", o.id, err)
	}
	return nil
}

func applyClearRel(t *txn, e *encoded, o *encodedOp) error {
	sb := t.session(e, o)
	if sb == nil {
		return nil
	}
	b := sb.Bucket(bucketRel)
	if b == nil {
		return nil
	}
	if err := b.Delete(e.bytes(o.key)); err != nil {
		return fmt.Errorf("session %q clear rel: %w", o.id, err)
	}
	return nil
}

func applyPutRetained(t *txn, e *encoded, o *encodedOp) error {
	if err := t.retained.Put(e.bytes(o.key), e.bytes(o.val)); err != nil {
		return fmt.Errorf("put retained: %w", err)
	}
	return nil
}

func applyDeleteRetained(t *txn, e *encoded, o *encodedOp) error {
	if err := t.retained.Delete(e.bytes(o.key)); err != nil {
		return fmt.Errorf("delete retained: %w", err)
	}
	return nil
}
