package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// appliedTwiceCases covers every op: a setup, then the op under test, which
// must change the state the first time (or be rejected, where noted) and
// leave the same state and response the second time.
var appliedTwiceCases = []struct {
	name    string
	setup   []*pb.Command
	op      *pb.Command
	wantErr error // the op is rejected, both times
}{
	{name: "route_set add", op: routeSet("n1", "a/+", "", 1)},
	{name: "route_set shared count", setup: []*pb.Command{routeSet("n1", "a/#", "g", 2)}, op: routeSet("n1", "a/#", "g", 5)},
	{name: "route_set remove", setup: []*pb.Command{routeSet("n1", "a", "", 1), routeSet("n2", "a", "", 1)}, op: routeSet("n1", "a", "", 0)},
	{name: "route_set from removed node", setup: []*pb.Command{nodeRemove("n9", 0)}, op: routeSet("n9", "a", "", 1), wantErr: ErrNodeRemoved},
	{name: "session_claim new", op: claim("c1", "n1", 1, 60)},
	{name: "session_claim takeover", setup: []*pb.Command{claim("c1", "n1", 1, 60), subs("c1", 1, "x/#")}, op: claim("c1", "n2", 2, 30)},
	{name: "session_claim clean start", setup: []*pb.Command{claim("c1", "n1", 1, 60), subs("c1", 1, "x/#")}, op: cleanClaim("c1", "n1", 2, 60)},
	{name: "session_claim stale", setup: []*pb.Command{claim("c1", "n1", 5, 60)}, op: claim("c1", "n2", 4, 60), wantErr: ErrStaleEpoch},
	{name: "session_subscriptions", setup: []*pb.Command{claim("c1", "n1", 1, 60)}, op: subs("c1", 1, "a", "$share/g/b/#", "c/+")},
	{name: "session_subscriptions stale", setup: []*pb.Command{claim("c1", "n1", 1, 60), claim("c1", "n2", 2, 60)}, op: subs("c1", 1, "a"), wantErr: ErrStaleEpoch},
	{name: "session_subscriptions no session", op: subs("c1", 1, "a"), wantErr: ErrNoSession},
	{name: "session_release", setup: []*pb.Command{claim("c1", "n1", 1, 60)}, op: release("c1", 1, 1_700_000_000_123)},
	{name: "session_release new expiry", setup: []*pb.Command{claim("c1", "n1", 1, 60)}, op: releaseExpiry("c1", 1, 1_700_000_000_123, 0)},
	{name: "session_handed_on", setup: []*pb.Command{claim("c1", "n1", 1, 60), claim("c1", "n2", 2, 60), claim("c1", "n3", 3, 60)}, op: handedOn("c1", "n1")},
	{name: "session_delete", setup: []*pb.Command{claim("c1", "n1", 3, 60)}, op: sessionDelete("c1", 3)},
	{name: "session_delete stale", setup: []*pb.Command{claim("c1", "n1", 3, 60)}, op: sessionDelete("c1", 2), wantErr: ErrStaleEpoch},
	{name: "will_set", op: willSet("n1/7", "c1", "n1", "last/words", "bye")},
	{name: "will_set replace", setup: []*pb.Command{willSet("n1/7", "c1", "n1", "last/words", "bye")}, op: willSet("n1/7", "c1", "n1", "last/words", "farewell")},
	{name: "will_set from a node recorded as down", setup: []*pb.Command{nodeDown("n1", 1000)}, op: willSet("n1/9", "c1", "n1", "t", "p")},
	{name: "will_clear", setup: []*pb.Command{willSet("n1/7", "c1", "n1", "t", "p"), willSet("n1/8", "c2", "n1", "t", "p")}, op: willClear("n1/7")},
	{name: "retained_set", op: retainedSet("a/b", "v1", 0)},
	{name: "retained_set replace", setup: []*pb.Command{retainedSet("a/b", "v1", 0)}, op: retainedSet("a/b", "v2", 99)},
	{name: "retained_set empty payload clears", setup: []*pb.Command{retainedSet("a/b", "v1", 0)}, op: retainedSet("a/b", "", 0)},
	{name: "retained_clear", setup: []*pb.Command{retainedSet("a/b", "v1", 0), retainedSet("a/c", "v1", 0)}, op: retainedClear("a/b")},
	{name: "retained_expire", setup: []*pb.Command{retainedSet("a", "1", 100), retainedSet("b", "2", 200), retainedSet("c", "3", 0)}, op: retainedExpire(150)},
	{name: "node_down", op: nodeDown("n2", 1_700_000_000_000)},
	{name: "node_up", setup: []*pb.Command{nodeDown("n2", 1)}, op: nodeUp("n2")},
	{name: "node_remove", setup: []*pb.Command{
		routeSet("n2", "a", "", 1), routeSet("n1", "a", "", 1), routeSet("n2", "b/#", "g", 3),
		willSet("n2/1", "c1", "n2", "t", "p"), claim("c2", "n2", 4, 60), nodeDown("n2", 1000),
	}, op: nodeRemove("n2", 0)},
}

// TestAppliedTwice applies the op of each case twice: as the same log entry
// (what a replayed log does) and as a re-proposal at the next index (what a
// proposer retrying after a timeout or a leader change does). Both leave the
// state and the response as the first application did.
func TestAppliedTwice(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range appliedTwiceCases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.must(tc.setup...)
			before := dump(t, h.f)

			e := h.entry(tc.op)
			resp1 := h.f.Apply(e)
			state1, snap1 := dump(t, h.f), snapshotBytes(t, h.f)
			switch err, _ := resp1.(error); {
			case tc.wantErr == nil && resp1 != nil:
				t.Fatalf("first apply: %v", resp1)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("first apply: %v, want %v", resp1, tc.wantErr)
			case tc.wantErr == nil && state1 == before:
				t.Fatalf("the op changed nothing; the case proves nothing:\n%s", state1)
			case tc.wantErr != nil && state1 != before:
				t.Fatalf("a rejected op changed the state:\n%s\nto\n%s", before, state1)
			}

			resp2 := h.f.Apply(e) // the same entry again
			if fmt.Sprint(resp2) != fmt.Sprint(resp1) {
				t.Errorf("same entry again: response %v, first %v", resp2, resp1)
			}
			if snap2 := snapshotBytes(t, h.f); !bytes.Equal(snap1, snap2) {
				t.Errorf("same entry again: snapshot differs:\n%s", dump(t, h.f))
			}

			resp3 := h.apply(tc.op) // re-proposed at the next index
			err1, _ := resp1.(error)
			err3, _ := resp3.(error)
			if (err1 == nil) != (err3 == nil) || (err1 != nil && !errors.Is(err3, tc.wantErr)) {
				t.Errorf("re-proposed: response %v, first %v", resp3, resp1)
			}
			if state3 := dump(t, h.f); state3 != state1 {
				t.Errorf("re-proposed: state\n%s\nafter the first apply\n%s", state3, state1)
			}
		})
		covered[tc.op.ProtoReflect().WhichOneof(opOneof).TextName()] = true
	}
	for _, o := range opTable() {
		if !covered[o.name] {
			t.Errorf("op %s has no applied-twice case", o.name)
		}
	}
}

// TestOpTableCoversEveryOp: every field of the Command oneof has an apply
// function, under its own name.
func TestOpTableCoversEveryOp(t *testing.T) {
	table := opTable()
	fields := opOneof.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		o, ok := table[fd.Number()]
		switch {
		case !ok:
			t.Errorf("op %s (field %d) has no apply function", fd.Name(), fd.Number())
		case o.name != string(fd.Name()):
			t.Errorf("field %d is %s, table says %s", fd.Number(), fd.Name(), o.name)
		}
	}
	if len(table) != fields.Len() {
		t.Errorf("table has %d ops, Command %d", len(table), fields.Len())
	}
}

func TestDecodeFailureIsFatal(t *testing.T) {
	h := newHarness(t)
	h.must(routeSet("n1", "a", "", 1))
	resp := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{0xff, 0xff, 0xff}})
	var fe *FatalError
	if !errors.As(resp.(error), &fe) || !errors.Is(fe, ErrDecode) || fe.Index != 2 {
		t.Fatalf("response %v, want a FatalError at 2 wrapping ErrDecode", resp)
	}
	assertHalted(t, h.f, fe, 1)
}

func TestUnknownOp(t *testing.T) {
	// An op from a newer version: field 999 of Command, as bytes.
	unknown := func(ignorable bool) []byte {
		var b []byte
		if ignorable {
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
		b = protowire.AppendTag(b, 999, protowire.BytesType)
		return protowire.AppendBytes(b, []byte{0x0a, 0x01, 'x'})
	}

	t.Run("ignorable is skipped and counted", func(t *testing.T) {
		h := newHarness(t)
		h.must(routeSet("n1", "a", "", 1))
		before := dump(t, h.f)
		if resp := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: unknown(true)}); resp != nil {
			t.Fatalf("response %v", resp)
		}
		if got := h.f.Stats(); got.Ignored != 1 || got.AppliedIndex != 2 || got.Halted {
			t.Errorf("stats %+v", got)
		}
		if dump(t, h.f) != before {
			t.Error("an ignored op changed the state")
		}
		h.idx = 2
		h.must(routeSet("n2", "a", "", 1)) // and the FSM goes on
	})
	t.Run("empty ignorable is a read barrier", func(t *testing.T) {
		h := newHarness(t)
		h.must(routeSet("n1", "a", "", 1))
		before := dump(t, h.f)
		data, _ := Encode(&pb.Command{Ignorable: true})
		if resp := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}); resp != nil {
			t.Fatalf("response %v", resp)
		}
		if got := h.f.Stats(); got.Ignored != 0 || got.AppliedIndex != 2 || got.Halted {
			t.Errorf("stats %+v: a barrier is applied, not counted as an op of a newer version", got)
		}
		if dump(t, h.f) != before {
			t.Error("a barrier changed the state")
		}
	})
	t.Run("not ignorable halts", func(t *testing.T) {
		h := newHarness(t)
		h.must(routeSet("n1", "a", "", 1))
		resp := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: unknown(false)})
		var fe *FatalError
		if err, _ := resp.(error); !errors.As(err, &fe) || !errors.Is(err, ErrUnknownOp) {
			t.Fatalf("response %v, want a FatalError wrapping ErrUnknownOp", resp)
		}
		assertHalted(t, h.f, fe, 1)
	})
	t.Run("empty command halts", func(t *testing.T) {
		h := newHarness(t)
		resp := h.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: nil})
		if err, _ := resp.(error); !errors.Is(err, ErrUnknownOp) {
			t.Fatalf("response %v, want ErrUnknownOp", resp)
		}
	})
}

// assertHalted checks that a halted FSM stays where it stopped.
func assertHalted(t *testing.T, f *FSM, fe *FatalError, applied uint64) {
	t.Helper()
	select {
	case <-f.Halted():
	default:
		t.Fatal("Halted not closed")
	}
	if f.Err() != fe || f.AppliedIndex() != applied || !f.Stats().Halted {
		t.Fatalf("Err %v, applied %d", f.Err(), f.AppliedIndex())
	}
	data, _ := Encode(routeSet("n3", "b", "", 1))
	if resp := f.Apply(&raft.Log{Index: fe.Index + 1, Type: raft.LogCommand, Data: data}); resp != fe {
		t.Errorf("apply after halt: %v", resp)
	}
	if _, ok := f.Route("b", ""); ok || f.AppliedIndex() != applied {
		t.Error("applied an entry after halting")
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Errorf("Snapshot after halt: %v", err)
	}
}

func TestInvalidCommandsAreRejected(t *testing.T) {
	for _, c := range []*pb.Command{
		routeSet("", "a", "", 1),
		routeSet("n1", "", "", 1),
		claim("", "n1", 1, 0),
		claim("c", "", 1, 0),
		claim("c", "n1", 0, 0),
		{Op: &pb.Command_SessionSubscriptions{SessionSubscriptions: &pb.SessionSubscriptions{ClientId: "c", Epoch: 1,
			Subscriptions: []*pb.Subscription{{Filter: "a", Qos: 3}}}}},
		release("", 1, 0),
		sessionDelete("", 1),
		willSet("", "c", "n1", "t", "p"),
		willSet("w", "c", "", "t", "p"),
		willSet("w", "c", "n1", "", "p"),
		willClear(""),
		retainedSet("", "p", 0),
		{Op: &pb.Command_RetainedSet{RetainedSet: &pb.RetainedSet{Topic: "t", Payload: []byte("p"), Qos: 3}}},
		retainedClear(""),
		nodeDown("", 1),
		nodeUp(""),
		nodeRemove("", 0),
	} {
		h := newHarness(t)
		h.must(claim("c", "n1", 1, 0))
		before := dump(t, h.f)
		resp := h.apply(c)
		if err, _ := resp.(error); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: response %v, want ErrInvalid", c, resp)
		}
		if dump(t, h.f) != before {
			t.Errorf("%v changed the state", c)
		}
		if s := h.f.Stats(); s.Rejected != 1 || s.AppliedIndex != 2 {
			t.Errorf("%v: stats %+v", c, s)
		}
	}
}
