package fsm

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/broker/topic"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

func newFSM(t testing.TB) *FSM {
	t.Helper()
	f, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// harness feeds commands to an FSM at consecutive log indexes.
type harness struct {
	t   testing.TB
	f   *FSM
	idx uint64
}

func newHarness(t testing.TB) *harness { return &harness{t: t, f: newFSM(t)} }

// entry encodes c as the log entry at the next index.
func (h *harness) entry(c *pb.Command) *raft.Log {
	h.t.Helper()
	data, err := Encode(c)
	if err != nil {
		h.t.Fatal(err)
	}
	h.idx++
	return &raft.Log{Index: h.idx, Term: 1, Type: raft.LogCommand, Data: data}
}

// apply applies c at the next index and returns the response.
func (h *harness) apply(c *pb.Command) any {
	h.t.Helper()
	return h.f.Apply(h.entry(c))
}

// must applies commands that must succeed.
func (h *harness) must(cs ...*pb.Command) {
	h.t.Helper()
	for _, c := range cs {
		if resp := h.apply(c); resp != nil {
			h.t.Fatalf("apply %v: %v", c, resp)
		}
	}
}

// Command builders.

func routeSet(node, filter, group string, members uint32) *pb.Command {
	return &pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{NodeId: node, Filter: filter, Group: group, Members: members}}}
}

func claim(client, node string, epoch uint64, expiry uint32) *pb.Command {
	return &pb.Command{Op: &pb.Command_SessionClaim{SessionClaim: &pb.SessionClaim{ClientId: client, NodeId: node, Epoch: epoch, ExpirySeconds: expiry}}}
}

func cleanClaim(client, node string, epoch uint64, expiry uint32) *pb.Command {
	c := claim(client, node, epoch, expiry)
	c.GetSessionClaim().CleanStart = true
	return c
}

func subs(client string, epoch uint64, filters ...string) *pb.Command {
	var list []*pb.Subscription
	for i, f := range filters {
		list = append(list, &pb.Subscription{Filter: f, Qos: uint32(i % 3), NoLocal: i%2 == 1, RetainHandling: uint32(i % 3), SubscriptionId: uint32(i)})
	}
	return &pb.Command{Op: &pb.Command_SessionSubscriptions{SessionSubscriptions: &pb.SessionSubscriptions{ClientId: client, Epoch: epoch, Subscriptions: list}}}
}

func release(client string, epoch uint64, atMs int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_SessionRelease{SessionRelease: &pb.SessionRelease{ClientId: client, Epoch: epoch, DisconnectedAtUnixMs: atMs}}}
}

func releaseExpiry(client string, epoch uint64, atMs int64, expiry uint32) *pb.Command {
	c := release(client, epoch, atMs)
	c.GetSessionRelease().ExpirySeconds = &expiry
	return c
}

func handedOn(client, node string) *pb.Command {
	return &pb.Command{Op: &pb.Command_SessionHandedOn{SessionHandedOn: &pb.SessionHandedOn{ClientId: client, NodeId: node}}}
}

func sessionDelete(client string, epoch uint64) *pb.Command {
	return &pb.Command{Op: &pb.Command_SessionDelete{SessionDelete: &pb.SessionDelete{ClientId: client, Epoch: epoch}}}
}

func willSet(id, client, node, topicName, payload string) *pb.Command {
	return &pb.Command{Op: &pb.Command_WillSet{WillSet: &pb.WillSet{
		WillId: id, ClientId: client, NodeId: node, DelaySeconds: 5, SessionExpirySeconds: 60,
		Topic: topicName, Payload: []byte(payload), Qos: 1, Retain: true, Properties: []byte{0x01, 0x01},
	}}}
}

func willClear(id string) *pb.Command {
	return &pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: id}}}
}

// willFire is the claim of a node about to publish will id.
func willFire(id string) *pb.Command {
	return &pb.Command{Op: &pb.Command_WillClear{WillClear: &pb.WillClear{WillId: id, Fire: true}}}
}

func retainedSet(topicName, payload string, expiresAtMs int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_RetainedSet{RetainedSet: &pb.RetainedSet{
		Topic: topicName, Payload: []byte(payload), Qos: 1, Properties: []byte{0x03, 0x00, 0x01, 'x'},
		ExpiresAtUnixMs: expiresAtMs, SetAtUnixMs: 1_700_000_000_000,
	}}}
}

func retainedClear(topicName string) *pb.Command {
	return &pb.Command{Op: &pb.Command_RetainedClear{RetainedClear: &pb.RetainedClear{Topic: topicName}}}
}

func retainedExpire(nowMs int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_RetainedExpire{RetainedExpire: &pb.RetainedExpire{NowUnixMs: nowMs}}}
}

func nodeDown(node string, atMs int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_NodeDown{NodeDown: &pb.NodeDown{NodeId: node, AtUnixMs: atMs}}}
}

func nodeUp(node string) *pb.Command {
	return &pb.Command{Op: &pb.Command_NodeUp{NodeUp: &pb.NodeUp{NodeId: node}}}
}

func nodeRemove(node string, atMs int64) *pb.Command {
	return &pb.Command{Op: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{NodeId: node, AtUnixMs: atMs}}}
}

// snapshotBytes persists a snapshot of f into memory.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.(*Snapshot).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	s.Release()
	return buf.Bytes()
}

// restored returns a fresh FSM restored from data.
func restored(t testing.TB, data []byte) *FSM {
	t.Helper()
	f := newFSM(t)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	return f
}

// dump describes the replicated state of f in canonical text, without the
// applied index, independent of the snapshot format; it also checks that
// the derived indexes agree with the state.
func dump(t testing.TB, f *FSM) string {
	t.Helper()
	checkIndexes(t, f)
	s := f.snapshot()
	s.sort()
	var b strings.Builder
	fmt.Fprintf(&b, "max_epoch %d\n", s.maxEpoch)
	for _, r := range s.routes {
		fmt.Fprintf(&b, "route %q %q %v\n", r.Filter, r.Group, r.Nodes)
	}
	for _, v := range s.sessions {
		fmt.Fprintf(&b, "session %+v\n", *v)
	}
	for _, v := range s.wills {
		fmt.Fprintf(&b, "will %+v\n", *v)
	}
	for _, v := range s.retained {
		fmt.Fprintf(&b, "retained %+v\n", *v)
	}
	for _, v := range s.nodes {
		fmt.Fprintf(&b, "node %+v\n", v)
	}
	for _, v := range s.fired {
		fmt.Fprintf(&b, "fired will %q at %d\n", v.id, v.index)
	}
	return b.String()
}

// checkIndexes verifies that the trie, routesOf, the retained tree and the
// expiry index hold exactly what the maps say.
func checkIndexes(t testing.TB, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st.Load()

	var want []topic.Entry[uint32]
	for k, r := range st.routes {
		if len(r.Nodes) == 0 {
			t.Errorf("route %v with no nodes", k)
		}
		if !slices.IsSortedFunc(r.Nodes, func(a, b RouteNode) int { return strings.Compare(a.NodeID, b.NodeID) }) {
			t.Errorf("route %v: nodes not sorted", k)
		}
		for _, n := range r.Nodes {
			if n.Members == 0 || (r.Group == "" && n.Members != 1) {
				t.Errorf("route %v: node %v", k, n)
			}
			want = append(want, topic.Entry[uint32]{Subscriber: n.NodeID, Filter: r.Filter, Group: r.Group, Value: n.Members})
			if _, ok := st.routesOf[n.NodeID][k]; !ok {
				t.Errorf("routesOf[%q] misses %v", n.NodeID, k)
			}
		}
	}
	var got []topic.Entry[uint32]
	st.trie.Walk(func(e topic.Entry[uint32]) bool {
		got = append(got, e)
		return true
	})
	slices.SortFunc(want, func(a, b topic.Entry[uint32]) int { // the order of Walk
		return cmp.Or(strings.Compare(a.Filter, b.Filter), strings.Compare(a.Group, b.Group),
			strings.Compare(a.Subscriber, b.Subscriber))
	})
	if !slices.Equal(want, got) {
		t.Errorf("trie disagrees with routes:\n trie   %+v\n routes %+v", got, want)
	}
	n := 0
	for node, set := range st.routesOf {
		if len(set) == 0 {
			t.Errorf("routesOf[%q] empty but present", node)
		}
		n += len(set)
	}
	if n != len(want) {
		t.Errorf("routesOf holds %d entries, routes %d", n, len(want))
	}

	inTree := st.rtree.root.all(nil)
	if len(inTree) != len(st.retained) {
		t.Errorf("retained tree holds %d messages, map %d", len(inTree), len(st.retained))
	}
	for _, r := range inTree {
		if st.retained[r.Topic] != r {
			t.Errorf("retained tree has %q, map disagrees", r.Topic)
		}
	}
	for topicName, r := range st.retained {
		at, ok := st.expiring[topicName]
		if (r.ExpiresAtUnixMs != 0) != ok || at != r.ExpiresAtUnixMs {
			t.Errorf("expiry index of %q: %d %v, message %d", topicName, at, ok, r.ExpiresAtUnixMs)
		}
	}
	if len(st.expiring) > len(st.retained) {
		t.Errorf("expiry index holds %d, retained %d", len(st.expiring), len(st.retained))
	}
}

// eventually retries fn until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(wait)
	}
}

// sortedMatches sorts route matches for comparison.
func sortedMatches(m []RouteMatch) []RouteMatch {
	slices.SortFunc(m, func(a, b RouteMatch) int {
		return cmp.Or(strings.Compare(a.Filter, b.Filter), strings.Compare(a.Group, b.Group), strings.Compare(a.NodeID, b.NodeID))
	})
	return m
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
