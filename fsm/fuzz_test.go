package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// fuzzEntries encodes commands as a fuzz input: each entry a uvarint length
// and that many bytes.
func fuzzEntries(cs ...*pb.Command) []byte {
	var out []byte
	for _, c := range cs {
		data, _ := Encode(c)
		out = binary.AppendUvarint(out, uint64(len(data)))
		out = append(out, data...)
	}
	return out
}

// splitEntries undoes fuzzEntries; a length past the end takes the rest.
func splitEntries(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 {
			return append(out, data)
		}
		data = data[k:]
		n = min(n, uint64(len(data)))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// FuzzApply feeds random log entries to two FSMs. Apply never panics; an
// entry that does not decode, or carries an unknown op that is not
// ignorable, halts with a *FatalError; anything else is applied or rejected
// with one of the sentinel errors. The derived indexes always agree with the
// state, both FSMs write the same snapshot, and that snapshot restores to
// itself.
func FuzzApply(f *testing.F) {
	f.Add(fuzzEntries(goldenLog()...))
	f.Add(fuzzEntries(randomCommands(1, 40)...))
	f.Add(fuzzEntries(randomCommands(2, 40)...))
	for _, tc := range appliedTwiceCases {
		f.Add(fuzzEntries(append(tc.setup, tc.op, tc.op)...))
	}
	f.Add([]byte{0x03, 0xff, 0xff, 0xff})
	f.Add([]byte{0x04, 0x08, 0x01, 0xba, 0x3e}) // ignorable, then a truncated unknown field

	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := newFSM(t), newFSM(t)
		for i, e := range splitEntries(data) {
			l := &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e}
			resp := a.Apply(l)
			if resp2 := b.Apply(l); (resp == nil) != (resp2 == nil) {
				t.Fatalf("entry %d: responses %v and %v", i, resp, resp2)
			}
			decodes := proto.Unmarshal(e, &pb.Command{}) == nil
			var fe *FatalError
			switch err, _ := resp.(error); {
			case resp == nil:
			case errors.As(err, &fe):
				if !errors.Is(err, ErrUnknownOp) && !errors.Is(err, ErrDecode) {
					t.Fatalf("entry %d: fatal %v", i, err)
				}
				if !decodes && !errors.Is(err, ErrDecode) {
					t.Fatalf("entry %d does not decode, response %v", i, err)
				}
				if a.Err() == nil {
					t.Fatal("fatal response without halting")
				}
				return
			case errors.Is(err, ErrInvalid), errors.Is(err, ErrStaleEpoch),
				errors.Is(err, ErrNoSession), errors.Is(err, ErrNodeRemoved),
				errors.Is(err, ErrNoWill), errors.Is(err, ErrWillFired):
			default:
				t.Fatalf("entry %d: response %#v", i, resp)
			}
			if !decodes {
				t.Fatalf("entry %d does not decode but was applied", i)
			}
		}
		checkIndexes(t, a)
		sa := snapshotBytes(t, a)
		if !bytes.Equal(sa, snapshotBytes(t, b)) {
			t.Fatal("two FSMs fed the same entries wrote different snapshots")
		}
		if !bytes.Equal(snapshotBytes(t, restored(t, sa)), sa) {
			t.Fatal("snapshot does not restore to itself")
		}
	})
}
