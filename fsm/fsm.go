package fsm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// Sentinel errors. Apply returns them wrapped, with context, as its response
// (raft.ApplyFuture.Response); test with errors.Is.
var (
	// ErrInvalid: a command whose fields cannot be applied (an empty id, a
	// QoS above 2). Rejected deterministically, state unchanged.
	ErrInvalid = errors.New("fsm: invalid command")
	// ErrStaleEpoch: a session command whose epoch does not fence the
	// stored one (a claim not above it, another op not equal to it).
	ErrStaleEpoch = errors.New("fsm: stale session epoch")
	// ErrNoSession: a session command for a client id without a session.
	ErrNoSession = errors.New("fsm: no such session")
	// ErrNoWill: a will_clear with fire set for a will that is not there
	// and was not fired lately: never registered, or cleared.
	ErrNoWill = errors.New("fsm: no such will")
	// ErrWillFired: a will_clear with fire set, or a will_set, for a will
	// that was fired within the last firedKeep log entries (another node
	// published it first).
	ErrWillFired = errors.New("fsm: will already published")
	// ErrNodeRemoved: a route, will or claim from a node that was removed
	// from the cluster (and has not rejoined with NodeUp).
	ErrNodeRemoved = errors.New("fsm: node was removed")

	// ErrDecode: a log entry that is not a Command. Always inside a
	// *FatalError.
	ErrDecode = errors.New("fsm: cannot decode log entry")
	// ErrUnknownOp: a Command with an op this version does not know and
	// that is not marked ignorable. Always inside a *FatalError.
	ErrUnknownOp = errors.New("fsm: unknown op")
	// ErrHalted: the FSM stopped at a fatal entry; it applies, snapshots
	// and restores nothing more. Always inside a *FatalError.
	ErrHalted = errors.New("fsm: halted")

	// ErrBadSnapshot: a snapshot stream that is truncated, corrupt or not a
	// snapshot of this package.
	ErrBadSnapshot = errors.New("fsm: bad snapshot")
	// ErrSnapshotVersion: a snapshot written in a newer format than this
	// binary reads.
	ErrSnapshotVersion = errors.New("fsm: snapshot format version not supported")
)

// FatalError is the response of Apply for an entry the FSM cannot apply
// without risking divergence from the other replicas: it cannot be decoded,
// or it carries an op this version does not know and that is not ignorable.
// The FSM halts: from then on Apply changes nothing and returns this error,
// Snapshot and Restore fail, and Halted is closed. The node must stop (and
// be upgraded or repaired) rather than keep serving from a state that no
// longer follows the log.
type FatalError struct {
	Index uint64 // Raft index of the entry
	Err   error  // wraps ErrDecode or ErrUnknownOp
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("fsm: fatal at raft index %d: %v", e.Index, e.Err)
}

func (e *FatalError) Unwrap() error { return e.Err }

// Config configures an FSM.
type Config struct {
	// Logger receives what Restore has to say; Apply never logs.
	// nil: slog.Default().
	Logger *slog.Logger
	// MaxRecordSize bounds one record of a snapshot being restored (a
	// retained message or a will carries a payload of up to the MQTT
	// maximum packet size, 256 MiB).
	MaxRecordSize int
}

// DefaultConfig returns the configuration New uses for zero fields.
func DefaultConfig() Config {
	return Config{Logger: slog.Default(), MaxRecordSize: 300 << 20}
}

// Validate reports a configuration New would refuse.
func (c Config) Validate() error {
	if c.MaxRecordSize < 0 {
		return fmt.Errorf("fsm: MaxRecordSize %d is negative", c.MaxRecordSize)
	}
	return nil
}

// FSM is the replicated state machine; it implements raft.FSM. Raft calls
// Apply, Snapshot and Restore from one goroutine; the queries may be called
// from any goroutine at any time.
type FSM struct {
	cfg Config
	ops map[protoreflect.FieldNumber]op

	// mu guards the contents of *st. Apply and Restore write-lock it, the
	// queries and Snapshot read-lock it. st itself is swapped by Restore
	// (under mu), and read without mu only by MatchRoutes, which relies on
	// the route trie's own lock.
	mu sync.RWMutex
	st atomic.Pointer[state]

	applied  atomic.Uint64
	ignored  atomic.Uint64
	rejected atomic.Uint64
	// downs counts, per node id, the NodeDown entries this replica applied
	// that marked the node down (local: not part of the replicated state).
	downs    sync.Map // string -> *atomic.Uint64
	restores atomic.Uint64

	fatal  atomic.Pointer[FatalError]
	halted chan struct{} // closed by halt

	changed [numKinds]notifier

	scratch sync.Pool // *[]topic.Entry[uint32], for MatchRoutes
}

var _ raft.FSM = (*FSM)(nil)

// op is one entry of the dispatch table: the apply function of one field of
// the Command oneof.
type op struct {
	name  string
	apply func(s *state, index uint64, c *pb.Command) (kinds, error)
}

// opOf makes an op from the getter of its message in Command and its applyX
// function. Most applyX functions take no log index: what they do must not
// depend on where in the log a command lands.
func opOf[T any](name string, get func(*pb.Command) T, apply func(*state, T) (kinds, error)) op {
	return op{name, func(s *state, _ uint64, c *pb.Command) (kinds, error) { return apply(s, get(c)) }}
}

// opAt is opOf for an applyX function that takes the log index: the wills
// remember when they were fired, for a window of entries (firedKeep).
func opAt[T any](name string, get func(*pb.Command) T, apply func(*state, uint64, T) (kinds, error)) op {
	return op{name, func(s *state, index uint64, c *pb.Command) (kinds, error) { return apply(s, index, get(c)) }}
}

// opOneof is the descriptor of Command.op, read-only.
var opOneof = (&pb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")

// opTable returns the dispatch table: one applyX function per op, keyed by
// the field number of the op in Command. TestOpTableCoversEveryOp checks it
// against the descriptor.
func opTable() map[protoreflect.FieldNumber]op {
	return map[protoreflect.FieldNumber]op{
		10: opOf("route_set", (*pb.Command).GetRouteSet, applyRouteSet),
		20: opOf("session_claim", (*pb.Command).GetSessionClaim, applySessionClaim),
		21: opOf("session_subscriptions", (*pb.Command).GetSessionSubscriptions, applySessionSubscriptions),
		22: opOf("session_release", (*pb.Command).GetSessionRelease, applySessionRelease),
		23: opOf("session_delete", (*pb.Command).GetSessionDelete, applySessionDelete),
		24: opOf("session_handed_on", (*pb.Command).GetSessionHandedOn, applySessionHandedOn),
		30: opAt("will_set", (*pb.Command).GetWillSet, applyWillSet),
		31: opAt("will_clear", (*pb.Command).GetWillClear, applyWillClear),
		40: opOf("retained_set", (*pb.Command).GetRetainedSet, applyRetainedSet),
		41: opOf("retained_clear", (*pb.Command).GetRetainedClear, applyRetainedClear),
		42: opOf("retained_expire", (*pb.Command).GetRetainedExpire, applyRetainedExpire),
		50: opOf("node_down", (*pb.Command).GetNodeDown, applyNodeDown),
		51: opOf("node_up", (*pb.Command).GetNodeUp, applyNodeUp),
		52: opOf("node_remove", (*pb.Command).GetNodeRemove, applyNodeRemove),
	}
}

// New returns an FSM with an empty state.
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.MaxRecordSize == 0 {
		cfg.MaxRecordSize = def.MaxRecordSize
	}
	cfg.Logger = cfg.Logger.With("component", "fsm")
	f := &FSM{cfg: cfg, ops: opTable(), halted: make(chan struct{})}
	f.st.Store(newState())
	return f, nil
}

// Encode marshals a command into the data of a Raft log entry, the same
// bytes for the same command on every node.
func Encode(c *pb.Command) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(c)
}

// Apply applies one committed log entry. Its response (the value of
// raft.ApplyFuture.Response on the node that proposed the entry) is:
//   - nil: applied, or skipped as an unknown ignorable op, or a no-op
//     because the state already was what the command sets;
//   - an error wrapping ErrInvalid, ErrStaleEpoch, ErrNoSession,
//     ErrNoWill, ErrWillFired or ErrNodeRemoved: rejected by every replica
//     alike, state unchanged;
//   - a *FatalError: the FSM halted (see FatalError).
//
// The applied index advances in all cases but the last.
func (f *FSM) Apply(l *raft.Log) any {
	if fe := f.fatal.Load(); fe != nil {
		return fe
	}
	var c pb.Command
	if err := proto.Unmarshal(l.Data, &c); err != nil {
		return f.halt(l.Index, fmt.Errorf("%w: %w", ErrDecode, err))
	}
	fd := c.ProtoReflect().WhichOneof(opOneof)
	var o op
	known := false
	if fd != nil {
		o, known = f.ops[fd.Number()]
	}
	if !known {
		if c.GetIgnorable() {
			if fd != nil || len(c.ProtoReflect().GetUnknown()) > 0 {
				f.ignored.Add(1) // an op of a newer version; an empty one is a read barrier
			}
			f.mu.Lock()
			f.setApplied(l.Index)
			f.mu.Unlock()
			f.notify(0)
			return nil
		}
		what := "no op"
		if fd != nil {
			what = fmt.Sprintf("field %d (%s)", fd.Number(), fd.Name())
		} else if n := len(c.ProtoReflect().GetUnknown()); n > 0 {
			what = fmt.Sprintf("unknown field(s), %d bytes", n)
		}
		return f.halt(l.Index, fmt.Errorf("%w: %s, not ignorable", ErrUnknownOp, what))
	}

	f.mu.Lock()
	changed, err := o.apply(f.st.Load(), l.Index, &c)
	f.setApplied(l.Index)
	f.mu.Unlock()
	if err != nil {
		f.rejected.Add(1)
		changed = 0
	}
	if nd := c.GetNodeDown(); nd != nil && changed != 0 {
		v, _ := f.downs.LoadOrStore(nd.GetNodeId(), new(atomic.Uint64))
		v.(*atomic.Uint64).Add(1)
	}
	f.notify(changed)
	if err != nil {
		return fmt.Errorf("%s at raft index %d: %w", o.name, l.Index, err)
	}
	return nil
}

// setApplied records index as applied; the caller holds mu, so that a
// Snapshot sees an index that matches its state.
func (f *FSM) setApplied(index uint64) {
	if index > f.applied.Load() {
		f.applied.Store(index)
	}
}

// notify wakes the watchers of what changed, and of every applied entry. It
// never blocks: a notifier closes a channel.
func (f *FSM) notify(changed kinds) {
	for k := Kind(1); k < numKinds; k++ {
		if changed&k.bit() != 0 {
			f.changed[k].notify()
		}
	}
	f.changed[KindAny].notify()
}

// halt stops the FSM at index: the first fatal error is kept and returned
// from then on.
func (f *FSM) halt(index uint64, err error) *FatalError {
	fe := &FatalError{Index: index, Err: err}
	if f.fatal.CompareAndSwap(nil, fe) {
		close(f.halted)
		return fe
	}
	return f.fatal.Load()
}

// Halted is closed when the FSM halts at a fatal entry; Err then returns
// the *FatalError. The node should stop on it: on a follower nobody waits
// for the response of Apply.
func (f *FSM) Halted() <-chan struct{} { return f.halted }

// Err returns the *FatalError that halted the FSM, or nil.
func (f *FSM) Err() error {
	if fe := f.fatal.Load(); fe != nil {
		return fe
	}
	return nil
}

func (f *FSM) haltedErr() error {
	if fe := f.fatal.Load(); fe != nil {
		return &FatalError{Index: fe.Index, Err: fmt.Errorf("%w: %w", ErrHalted, fe.Err)}
	}
	return nil
}

// Kind names one part of the state, for Changed.
type Kind uint8

// The parts of the state. KindAny changes with every applied entry.
const (
	KindAny Kind = iota
	KindRoutes
	KindSessions
	KindWills
	KindRetained
	KindNodes
	numKinds
)

// kinds is a set of Kinds, as a bit mask.
type kinds uint8

func (k Kind) bit() kinds { return 1 << k }

// Changed returns a channel that is closed after the next applied entry (or
// restore) that changes k; call it again for the change after that. Read
// the state after receiving, not before calling: a change between the two
// closes the channel, so nothing is missed.
func (f *FSM) Changed(k Kind) <-chan struct{} {
	if k >= numKinds {
		k = KindAny
	}
	return f.changed[k].wait()
}

// notifier hands out a channel and closes it on notify. It allocates a new
// channel only when somebody asked for one since the last notify, so an
// Apply nobody watches costs a lock and a nil check.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}
